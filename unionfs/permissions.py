"""POSIX permission checks against the owners and modes the mount shows (pure).

Used for other users of an unprivileged mount with allow_other: there the kernel's own checks are off, because
the mounting user is root of its mount, so the daemon checks everyone else itself.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection

from . import acl

READ, WRITE, EXEC = os.R_OK, os.W_OK, os.X_OK


def allowed(st: os.stat_result, uid: int, gids: Collection[int], mask: int, access: acl.Acl | None = None) -> bool:
    """Whether a process with `uid` and groups `gids` may do `mask` (R/W/X bits) to an entry shown as `st`,
    which has the access ACL `access` (None: none)."""
    if uid == 0:
        # root: anything, but to execute a file some execute bit must be set
        return not (mask & EXEC and not stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o111)
    if access is not None and uid != st.st_uid:
        return acl.permits(access, st.st_uid, st.st_gid, uid, frozenset(gids), mask)
    if uid == st.st_uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid in gids:
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return mask & bits == mask


def may_delete(parent: os.stat_result, victim: os.stat_result, uid: int) -> bool:
    """The sticky-bit rule: in a sticky directory only the owner of the entry or of the directory removes it."""
    if not parent.st_mode & stat.S_ISVTX or uid == 0:
        return True
    return uid in (victim.st_uid, parent.st_uid)
