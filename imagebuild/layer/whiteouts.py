"""The whiteout and opaque forms as layers use them. Their one definition is unionfs's (`unionfs.whiteout`,
ARCHITECTURE section 3), shared with the filesystem: this module re-exports it and adds what only a layer's tar
needs.

A layer directory may mix both forms. A whiteout is a character device 0/0 named NAME, or a file `.wh.NAME`
(OCI). A directory is opaque when it holds `.wh..wh..opq` or carries one of `OPAQUE_XATTRS` with value `y`.
Names starting with `.wh..wh.` other than the opaque marker are reserved (other tools' metadata, such as aufs's)
and are never treated as content.

Union-filesystem bookkeeping xattrs (`is_internal_xattr`) and host metadata (`HOST_XATTRS`) never go into a tar
and are never taken from one (`is_kept_out`). `user.containers.override_stat` replaces the on-disk owner and
mode; its codec is unionfs's: `uid:gid:mode[:type]`, where the type (`char-M-m`, `block-M-m`, ...) records a
device kept as a placeholder regular file.
"""

from __future__ import annotations

import stat

from unionfs import (
    OPAQUE_MARKER,
    OPAQUE_VALUE,
    OPAQUE_XATTRS,
    OVERRIDE_STAT,
    TRUSTED_OPAQUE,
    USER_OPAQUE,
    WH_PREFIX,
    OverrideStat,
    is_chardev_whiteout,
    is_internal_xattr,
    is_opaque_dir,
    is_opaque_xattrs,
    is_reserved_name,
    parse_override,
    whited_out_target,
    whiteout_name,
)

#: Not union bookkeeping, but never part of an image: host metadata consumed (the ownership record) or host
#: labels (SELinux).
HOST_XATTRS: frozenset[str] = frozenset({OVERRIDE_STAT, "security.selinux"})

SPECIAL_TYPES = (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO)


def is_kept_out(name: str) -> bool:
    """True for xattrs that never go into a layer tar and are never taken from one."""
    return name in HOST_XATTRS or is_internal_xattr(name)


def parse_override_stat(value: bytes) -> OverrideStat:
    """Parse a `user.containers.override_stat` record (see unionfs.ownership); ValueError when malformed."""
    return parse_override(value)


__all__ = [
    "HOST_XATTRS",
    "OPAQUE_MARKER",
    "OPAQUE_VALUE",
    "OPAQUE_XATTRS",
    "OVERRIDE_STAT",
    "SPECIAL_TYPES",
    "TRUSTED_OPAQUE",
    "USER_OPAQUE",
    "WH_PREFIX",
    "OverrideStat",
    "is_chardev_whiteout",
    "is_kept_out",
    "is_opaque_dir",
    "is_opaque_xattrs",
    "is_reserved_name",
    "parse_override_stat",
    "whited_out_target",
    "whiteout_name",
]
