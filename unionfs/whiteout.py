"""The whiteout and opaque-directory forms: names and predicates (ARCHITECTURE section 3), the one definition
both unionfs and imagebuild use.

Read, in every layer: a character device 0/0 at NAME, or a file `.wh.NAME` (OCI), hide NAME in the layers
below. A directory is opaque when it holds `.wh..wh..opq` (OCI) or carries one of OPAQUE_XATTRS = b"y".
Every other name starting `.wh..wh.` is reserved (the OCI image spec; aufs keeps its metadata there, such as
`.wh..wh.plnk`): neither a whiteout nor content. So no name starting `.wh.` is ever content: never shown
through a mount, never creatable in one, never a file of a layer.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Mapping

from .privxattr import RECORD_PREFIX

WH_PREFIX = ".wh."
META_PREFIX = ".wh..wh."  # reserved: the opaque marker and other tools' metadata
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_VALUE = b"y"

TRUSTED_OPAQUE = "trusted.overlay.opaque"
USER_OPAQUE = "user.overlay.opaque"
FUSEOVERLAY_OPAQUE = "user.fuseoverlayfs.opaque"
OPAQUE_XATTRS: tuple[str, ...] = (TRUSTED_OPAQUE, USER_OPAQUE, FUSEOVERLAY_OPAQUE)

TRUSTED_METACOPY = "trusted.overlay.metacopy"
USER_METACOPY = "user.overlay.metacopy"

OVERRIDE_STAT = "user.containers.override_stat"
#: A lazy layer's placeholder: the key its data is fetched by (fetch.py).
FETCH_XATTR = "user.unionfs.fetch"
#: xattr namespaces that belong to union filesystems, never shown through the mount nor settable in it
#: (RECORD_PREFIX: the ownership record and the records of privileged xattrs, see privxattr.py).
INTERNAL_XATTR_PREFIXES: tuple[str, ...] = (
    "trusted.overlay.",
    "user.overlay.",
    "user.fuseoverlayfs.",
    "user.unionfs.",
    RECORD_PREFIX,
)


class WhiteoutForm(enum.Enum):
    """How whiteouts and opaque markers are written into the upper layer."""

    CHARDEV = "chardev"  # char device 0/0 and an `*.overlay.opaque` xattr: the kernel's form
    FILE = "file"  # `.wh.NAME` files and `.wh..wh..opq`: the OCI form, needs no privilege


def is_reserved_name(name: str) -> bool:
    """True for every name of the whiteout forms: whiteout files, the opaque marker and the reserved `.wh..wh.*`
    names. None of them is content: never shown, never creatable, never a file of a layer."""
    return name.startswith(WH_PREFIX)


#: The name unionfs's modules know `is_reserved_name` by. It is true for `.wh..wh.*` too, which are not
#: whiteouts: ask `whited_out_target` whether a name is a whiteout file.
is_whiteout_name = is_reserved_name


def is_meta_name(name: str) -> bool:
    """True for `.wh..wh.*` names: the opaque marker and the names reserved for other tools' metadata."""
    return name.startswith(META_PREFIX)


def whiteout_name(name: str) -> str:
    return WH_PREFIX + name


def whited_out_target(name: str) -> str | None:
    """The name hidden by the whiteout file `name`, or None when `name` is not a whiteout file."""
    if name.startswith(WH_PREFIX) and not is_meta_name(name):
        target = name[len(WH_PREFIX) :]
        return target or None
    return None


def is_chardev_whiteout(mode: int, rdev: int) -> bool:
    """True for the kernel's whiteout form: a character device with device number 0/0."""
    return stat.S_ISCHR(mode) and rdev == 0


def is_opaque_xattrs(xattrs: Mapping[str, bytes]) -> bool:
    """True when one of a directory's opaque xattrs says `y`."""
    return any(xattrs.get(name) == OPAQUE_VALUE for name in OPAQUE_XATTRS)


def is_opaque_dir(directory: int | str) -> bool:
    """Whether a directory (an fd, or its path) is opaque: it carries one of the
    opaque xattrs with value `y`, or holds the OCI marker."""
    by_path = isinstance(directory, str)
    for attr in OPAQUE_XATTRS:
        try:
            value = os.getxattr(directory, attr, follow_symlinks=False) if by_path else os.getxattr(directory, attr)
            if value == OPAQUE_VALUE:
                return True
        except OSError:
            pass
    try:
        if isinstance(directory, int):
            os.lstat(OPAQUE_MARKER, dir_fd=directory)
        else:
            os.lstat(os.path.join(directory, OPAQUE_MARKER))
    except OSError:
        return False
    return True


def is_internal_xattr(name: str) -> bool:
    """True for union-filesystem bookkeeping: never shown through a mount, never settable in one, never in a
    layer's tar and never taken from one."""
    return name == OVERRIDE_STAT or name.startswith(INTERNAL_XATTR_PREFIXES)
