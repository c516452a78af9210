"""Pure helpers for the whiteout and opaque forms a layer directory may hold (ARCHITECTURE section 3).

A layer directory may mix both forms. A whiteout is a character device 0/0 named NAME, or a file `.wh.NAME`
(OCI). A directory is opaque when it holds `.wh..wh..opq` or carries one of `OPAQUE_XATTRS` with value `y`.
Names starting with `.wh..wh.` other than the opaque marker are metadata of other tools (aufs) and are never
treated as content.

Internal xattrs (union-filesystem bookkeeping) never go into a tar and are never taken from one.
`user.containers.override_stat` replaces the on-disk owner and mode; its codec is unionfs.ownership, shared
with the filesystem: `uid:gid:mode[:type]`, where the type (`char-M-m`, `block-M-m`, ...) records a device kept
as a placeholder regular file.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping

from unionfs.ownership import OverrideStat
from unionfs.ownership import parse as parse_override
from unionfs.whiteout import (  # one definition of the forms, shared with the filesystem
    FUSEOVERLAY_OPAQUE,
    INTERNAL_XATTR_PREFIXES,
    OPAQUE_XATTRS,
    OVERRIDE_STAT,
    TRUSTED_OPAQUE,
    USER_OPAQUE,
)

WH_PREFIX = ".wh."
META_PREFIX = ".wh..wh."
OPAQUE_MARKER = ".wh..wh..opq"

OPAQUE_VALUE = b"y"
#: Not internal to a union filesystem, but never part of an image: host metadata consumed or host labels.
HOST_XATTRS: frozenset[str] = frozenset({OVERRIDE_STAT, "security.selinux"})

SPECIAL_TYPES = (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO)


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


def parse_override_stat(value: bytes) -> OverrideStat:
    """Parse a `user.containers.override_stat` record (see unionfs.ownership); ValueError when malformed."""
    return parse_override(value)


__all__ = [
    "FUSEOVERLAY_OPAQUE",
    "INTERNAL_XATTR_PREFIXES",
    "OPAQUE_XATTRS",
    "OVERRIDE_STAT",
    "TRUSTED_OPAQUE",
    "USER_OPAQUE",
    "OverrideStat",
    "parse_override_stat",
]
