"""POSIX permission checks against the owners and modes the mount shows (pure; no FUSE).

Used for other users of an unprivileged mount with allow_other: there the kernel's own checks are off, because
the mounting user is root of its mount, so the daemon checks everyone else itself.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Collection, Iterable
from typing import Protocol

from . import acl
from .attrs import AttrChange
from .errors import UnionError
from .idmap import IdMap
from .tree import Node

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


class Context(Protocol):
    """What a request says of its caller (pyfuse3's RequestContext)."""

    uid: int
    gid: int
    pid: int


class Checker:
    """The checks the kernel would have made, for other users of an unprivileged mount with allow_other
    (`active`): the mounting user and root pass unchecked. Ids are compared as the layers store them (`ids`);
    `groups(pid)` lists a caller's supplementary groups, `access_acl(node)` the access ACL a node shows."""

    def __init__(
        self,
        active: bool,
        owner_uid: int,
        ids: IdMap,
        groups: Callable[[int], Iterable[int]],
        access_acl: Callable[[Node], acl.Acl | None],
    ) -> None:
        self.active = active
        self.owner_uid = owner_uid
        self.ids = ids
        self.groups = groups
        self.access_acl = access_acl

    def foreign(self, ctx: Context | None) -> bool:
        """Whether `ctx` is another user of an unprivileged mount, whom the daemon checks."""
        return self.active and ctx is not None and ctx.uid not in (self.owner_uid, 0)

    def require(self, ctx: Context | None, node: Node, mask: int) -> None:
        """EACCES unless `ctx` may do `mask` to `node` (for a foreign caller; anyone else passes)."""
        if not self.active or ctx is None or ctx.uid in (self.owner_uid, 0):  # (foreign(), inline: every request)
            return
        uid = self.ids.store_uid(ctx.uid)
        gids = {self.ids.store_gid(g) for g in (ctx.gid, *self.groups(ctx.pid))}
        if not allowed(node.st, uid, gids, mask, self.access_acl(node)):
            raise UnionError(errno.EACCES)

    def drops_setgid(self, ctx: Context | None, node: Node, gid: int | None = None, mode: int | None = None) -> bool:
        """Whether a chmod, an access ACL, a truncation or a write by `ctx` clears the setgid bit of `node` (or
        of the `mode` a chmod asks for), as the kernel clears it (setattr_prepare, posix_acl_update_mode,
        file_remove_privs): the caller is not in the file's group (`gid`, stored, where a chown changes it) and
        has no CAP_FSETID (root, and on an unprivileged mount the mounting user, root of its mount, have it)."""
        if ctx is None or ctx.uid in (self.owner_uid, 0):
            return False
        if not (node.st.st_mode if mode is None else mode) & stat.S_ISGID:
            return False
        group = node.st.st_gid if gid is None else gid
        if self.ids.store_gid(ctx.gid) == group:
            return False
        return all(self.ids.store_gid(g) != group for g in self.groups(ctx.pid))

    def require_delete(self, ctx: Context | None, parent: Node, victim: Node) -> None:
        """EACCES or EPERM unless `ctx` may remove `victim` from `parent`."""
        self.require(ctx, parent, WRITE | EXEC)
        if ctx is not None and self.foreign(ctx) and not may_delete(parent.st, victim.st, self.ids.store_uid(ctx.uid)):
            raise UnionError(errno.EPERM)

    def require_setattr(self, ctx: Context | None, node: Node, change: AttrChange) -> None:
        """EPERM or EACCES unless `ctx` may make `change` (in stored ids) to `node`."""
        if ctx is None or not self.foreign(ctx):
            return
        owner = self.ids.store_uid(ctx.uid) == node.st.st_uid
        if change.uid is not None and change.uid != node.st.st_uid:
            raise UnionError(errno.EPERM)
        if (change.gid is not None or change.mode is not None) and not owner:
            raise UnionError(errno.EPERM)
        if change.sets_times and not owner:
            self.require(ctx, node, WRITE)
        if change.size is not None:
            self.require(ctx, node, WRITE)
