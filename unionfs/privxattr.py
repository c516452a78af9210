"""Privileged xattrs an unprivileged writer keeps as records, and the forms of `security.capability`.

An ordinary user may set no `security.*` xattr (a file capability needs CAP_SETFCAP over the file in its
filesystem's user namespace, the others CAP_SYS_ADMIN) and no `trusted.*` one. Where the upper's writer is not
privileged, such an xattr is kept as `user.containers.override_NAME`, the record fuse-overlayfs
(`xattr_permissions=2`) and containers/storage use for `security.*`, and shown as NAME: a record wins over an
xattr of the same name on disk. The records themselves are union bookkeeping, never shown and never settable.

POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`) are kept the same way where the writer is
not privileged: an ordinary user could set them on the upper files it owns, but there they would name the
user's own ids as owner and group and give other users of the host access to the upper, and the mode the
kernel derives from them would bind the daemon itself. acl.py keeps the mode and a recorded ACL in step.

`security.capability` comes in three revisions (linux/capability.h, all little-endian 32-bit words): v1 (magic
and one permitted/inheritable pair, 12 bytes), v2 (two pairs, 20 bytes) and v3 (v2 and the uid of the user
namespace root the capability is for, 24 bytes). A process in a user namespace that sets a v2 capability gets
a v3 written, with the host uid of its namespace's root; an image layer carries v2 for the image's root.

What a record cannot do: Linux allows no user.* xattr on a symlink or a fifo, so an unprivileged writer loses
a privileged xattr there. A capability a mount shows from a record is never honoured at exec: an ordinary
user's FUSE mount is nosuid (fusermount3), so a rootless `RUN ping` runs without CAP_NET_RAW, as any process
of that user would; it is kept for the image, whose runtime sets it for real. fuse-overlayfs reads records of
`security.*` xattrs only, not of `trusted.*` ones.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping

RECORD_PREFIX = "user.containers.override_"
#: Namespaces an unprivileged writer keeps as records.
PRIVILEGED_NAMESPACES: tuple[str, ...] = ("security.", "trusted.")
#: Single xattrs an unprivileged writer keeps as records too: POSIX ACLs.
RECORDED_NAMES: tuple[str, ...] = ("system.posix_acl_access", "system.posix_acl_default")
CAPABILITY = "security.capability"

_REVISION_MASK = 0xFF000000
_REVISION_2 = 0x02000000
_REVISION_3 = 0x03000000
_SIZE_2 = 20
_SIZE_3 = 24


def is_privileged(name: str) -> bool:
    """True for xattrs only a privileged writer may set (and POSIX ACLs): kept as records where the writer is
    not."""
    return name.startswith(PRIVILEGED_NAMESPACES) or name in RECORDED_NAMES


def record_name(name: str) -> str:
    """The name of the record that keeps privileged xattr `name`."""
    return RECORD_PREFIX + name


def recorded_name(name: str) -> str | None:
    """The privileged xattr the record `name` keeps, or None when `name` is no such record."""
    if not name.startswith(RECORD_PREFIX):
        return None
    kept = name[len(RECORD_PREFIX) :]
    return kept if is_privileged(kept) else None


def shown_names(names: Iterable[str]) -> list[str]:
    """On-disk xattr names as they show: records under the names they keep, each name once, in order."""
    shown: dict[str, None] = {}
    for name in names:
        shown[recorded_name(name) or name] = None
    return list(shown)


def shown_xattrs(xattrs: Mapping[str, bytes]) -> dict[str, bytes]:
    """On-disk xattrs as they show: a record's value under the name it keeps, over the disk's own."""
    shown = {name: value for name, value in xattrs.items() if recorded_name(name) is None}
    for name, value in xattrs.items():
        kept = recorded_name(name)
        if kept is not None:
            shown[kept] = value
    return shown


def capability_rootid(value: bytes) -> int | None:
    """The namespace root uid of a v3 capability, None for any other value."""
    if len(value) != _SIZE_3 or struct.unpack_from("<I", value)[0] & _REVISION_MASK != _REVISION_3:
        return None
    rootid: int = struct.unpack_from("<I", value, _SIZE_2)[0]
    return rootid


def image_capability(value: bytes, to_image_uid: Callable[[int], int] | None = None) -> bytes:
    """A capability in the form an image carries: a v3 whose root uid is (maps to, by `to_image_uid`) the
    image's root becomes v2; another v3 keeps its (mapped) root uid. v1, v2 and malformed values pass as they are.
    """
    rootid = capability_rootid(value)
    if rootid is None:
        return value
    if to_image_uid is not None:
        rootid = to_image_uid(rootid)
    magic = struct.unpack_from("<I", value)[0]
    if rootid == 0:
        return struct.pack("<I", (magic & ~_REVISION_MASK) | _REVISION_2) + value[4:_SIZE_2]
    return value[:_SIZE_2] + struct.pack("<I", rootid)
