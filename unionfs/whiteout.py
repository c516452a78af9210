"""The whiteout and opaque-directory forms: pure names and predicates (ARCHITECTURE section 3).

Read, in every layer: a character device 0/0 at NAME, or a file `.wh.NAME` (OCI), hide NAME in the layers
below. A directory is opaque when it holds `.wh..wh..opq` (OCI) or carries one of OPAQUE_XATTRS = b"y".
"""

from __future__ import annotations

import enum
import stat

from .privxattr import RECORD_PREFIX

WH_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

TRUSTED_OPAQUE = "trusted.overlay.opaque"
USER_OPAQUE = "user.overlay.opaque"
FUSEOVERLAY_OPAQUE = "user.fuseoverlayfs.opaque"
OPAQUE_XATTRS: tuple[str, ...] = (TRUSTED_OPAQUE, USER_OPAQUE, FUSEOVERLAY_OPAQUE)

TRUSTED_METACOPY = "trusted.overlay.metacopy"
USER_METACOPY = "user.overlay.metacopy"

OVERRIDE_STAT = "user.containers.override_stat"
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


def is_whiteout_name(name: str) -> bool:
    """True for names that are whiteout files or markers (never shown, never creatable)."""
    return name.startswith(WH_PREFIX)


def whiteout_name(name: str) -> str:
    return WH_PREFIX + name


def whited_out_target(name: str) -> str | None:
    """The name hidden by the whiteout file `name`, or None when `name` is not a whiteout file."""
    if name.startswith(WH_PREFIX) and name != OPAQUE_MARKER and not name.startswith(WH_PREFIX + WH_PREFIX):
        target = name[len(WH_PREFIX) :]
        return target or None
    return None


def is_chardev_whiteout(mode: int, rdev: int) -> bool:
    return stat.S_ISCHR(mode) and rdev == 0


def is_internal_xattr(name: str) -> bool:
    return name == OVERRIDE_STAT or name.startswith(INTERNAL_XATTR_PREFIXES)
