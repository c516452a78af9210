"""unionfs: a user-space union filesystem (FUSE), and the API imagebuild uses it through.

`__all__` is that API: imagebuild imports `from unionfs import ...` these names and nothing else (a unit test
holds it to that). Importing the package is cheap: no pyfuse3 and no trio, which only the daemon (`ops.py`,
`mount.py`) loads.
"""

from __future__ import annotations

from .api import Daemon, MountError, UnionMount, daemons, exited, mounted, owner_gone, processes, reap
from .config import mounted_points
from .errors import UnionfsError
from .layers import Layer
from .ownership import OverrideStat
from .ownership import parse as parse_override
from .privxattr import CAPABILITY, image_capability, is_privileged, record_name, shown_xattrs
from .tree import Node, Tree
from .unmount import UnmountError, is_dead, unmount
from .whiteout import (
    FETCH_XATTR,
    OPAQUE_MARKER,
    OPAQUE_VALUE,
    OPAQUE_XATTRS,
    OVERRIDE_STAT,
    TRUSTED_OPAQUE,
    USER_OPAQUE,
    WH_PREFIX,
    is_chardev_whiteout,
    is_internal_xattr,
    is_opaque_dir,
    is_opaque_xattrs,
    is_reserved_name,
    whited_out_target,
    whiteout_name,
)

#: The errors unionfs raises for a user to act on, each a one-line message: what a caller's CLI catches.
ERRORS: tuple[type[Exception], ...] = (UnionfsError,)  # the one root: ConfigError, MountError, UnmountError, ...

__all__ = [
    "CAPABILITY",
    "ERRORS",
    "FETCH_XATTR",
    "OPAQUE_MARKER",
    "OPAQUE_VALUE",
    "OPAQUE_XATTRS",
    "OVERRIDE_STAT",
    "TRUSTED_OPAQUE",
    "USER_OPAQUE",
    "WH_PREFIX",
    "Daemon",
    "Layer",
    "MountError",
    "Node",
    "OverrideStat",
    "Tree",
    "UnionMount",
    "UnmountError",
    "daemons",
    "exited",
    "image_capability",
    "is_chardev_whiteout",
    "is_dead",
    "is_internal_xattr",
    "is_opaque_dir",
    "is_opaque_xattrs",
    "is_privileged",
    "is_reserved_name",
    "mounted",
    "mounted_points",
    "owner_gone",
    "parse_override",
    "processes",
    "reap",
    "record_name",
    "shown_xattrs",
    "unmount",
    "whited_out_target",
    "whiteout_name",
]
