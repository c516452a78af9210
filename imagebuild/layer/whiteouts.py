"""Pure helpers for the whiteout and opaque forms a layer directory may hold (ARCHITECTURE section 3).

A layer directory may mix both forms. A whiteout is a character device 0/0 named NAME, or a file `.wh.NAME`
(OCI). A directory is opaque when it holds `.wh..wh..opq` or carries one of `OPAQUE_XATTRS` with value `y`.
Names starting with `.wh..wh.` other than the opaque marker are metadata of other tools (aufs) and are never
treated as content.

Internal xattrs (union-filesystem bookkeeping) never go into a tar and are never taken from one.
`user.containers.override_stat` holds `uid:gid:mode` (mode in octal, possibly with a file type such as
`020644` for a character device) that replaces the on-disk owner and mode; for a device kept as a placeholder
regular file, `DEVICE_XATTR` holds its `major:minor`.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass

WH_PREFIX = ".wh."
META_PREFIX = ".wh..wh."
OPAQUE_MARKER = ".wh..wh..opq"

TRUSTED_OPAQUE = "trusted.overlay.opaque"
USER_OPAQUE = "user.overlay.opaque"
FUSEOVERLAY_OPAQUE = "user.fuseoverlayfs.opaque"
OPAQUE_XATTRS: tuple[str, ...] = (TRUSTED_OPAQUE, USER_OPAQUE, FUSEOVERLAY_OPAQUE)
OPAQUE_VALUE = b"y"

OVERRIDE_STAT = "user.containers.override_stat"
#: `major:minor` of a device that is stored as a placeholder regular file (rootless extraction).
DEVICE_XATTR = "user.unionfs.rdev"

INTERNAL_XATTR_PREFIXES: tuple[str, ...] = (
    "trusted.overlay.",
    "user.overlay.",
    "user.fuseoverlayfs.",
    "user.unionfs.",
)
#: Not internal to a union filesystem, but never part of an image: host metadata consumed or host labels.
HOST_XATTRS: frozenset[str] = frozenset({OVERRIDE_STAT, "security.selinux"})

_SPECIAL_TYPES = (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO)


def is_internal_xattr(name: str) -> bool:
    """True for xattrs that never go into a layer tar and are never taken from one."""
    return name in HOST_XATTRS or name.startswith(INTERNAL_XATTR_PREFIXES)


def is_meta_name(name: str) -> bool:
    """True for `.wh..wh.*` names: the opaque marker and other tools' metadata."""
    return name.startswith(META_PREFIX)


def whiteout_target(name: str) -> str | None:
    """The name hidden by the OCI whiteout file `name`, or None when `name` is no whiteout file."""
    if not name.startswith(WH_PREFIX) or is_meta_name(name):
        return None
    return name[len(WH_PREFIX) :] or None


def is_whiteout_name(name: str) -> bool:
    return whiteout_target(name) is not None


def whiteout_name(target: str) -> str:
    """The OCI whiteout file name that hides `target`."""
    return WH_PREFIX + target


def is_chardev_whiteout(mode: int, rdev: int) -> bool:
    """True for the kernel's whiteout form: a character device with device number 0/0."""
    return stat.S_ISCHR(mode) and rdev == 0


def is_opaque_xattrs(xattrs: Mapping[str, bytes]) -> bool:
    """True when one of the opaque xattrs says `y`."""
    return any(xattrs.get(name) == OPAQUE_VALUE for name in OPAQUE_XATTRS)


@dataclass(frozen=True)
class OverrideStat:
    """The owner and mode recorded in `user.containers.override_stat`; `mode` may carry a file type."""

    uid: int
    gid: int
    mode: int

    @property
    def file_type(self) -> int:
        """The `S_IFMT` bits, 0 when the record holds permission bits only."""
        return stat.S_IFMT(self.mode)

    @property
    def permissions(self) -> int:
        return stat.S_IMODE(self.mode)

    @property
    def is_special(self) -> bool:
        """True when the record describes a device or fifo (stored on disk as a placeholder file)."""
        return self.file_type in _SPECIAL_TYPES

    def encode(self) -> bytes:
        return f"{self.uid}:{self.gid}:0{self.mode:o}".encode("ascii")


def parse_override_stat(value: bytes) -> OverrideStat:
    """Parse `uid:gid:mode` (decimal ids, octal mode); ValueError when malformed."""
    try:
        uid_text, gid_text, mode_text = value.decode("ascii").strip().split(":")
        uid, gid, mode = int(uid_text, 10), int(gid_text, 10), int(mode_text, 8)
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"malformed {OVERRIDE_STAT} value {value!r}") from None
    if uid < 0 or gid < 0 or not 0 <= mode <= 0o177777:
        raise ValueError(f"out-of-range {OVERRIDE_STAT} value {value!r}")
    return OverrideStat(uid, gid, mode)


def parse_device(value: bytes) -> tuple[int, int]:
    """Parse `major:minor` (decimal); ValueError when malformed."""
    try:
        major_text, minor_text = value.decode("ascii").strip().split(":")
        major, minor = int(major_text, 10), int(minor_text, 10)
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"malformed {DEVICE_XATTR} value {value!r}") from None
    if major < 0 or minor < 0:
        raise ValueError(f"out-of-range {DEVICE_XATTR} value {value!r}")
    return major, minor


def format_device(major: int, minor: int) -> bytes:
    return f"{major}:{minor}".encode("ascii")
