"""The union filesystem addressed as the kernel addresses it: by inode number, handle and name. No FUSE here.

Between the FUSE shell (ops.py, which only translates) and the core (union.py, on paths and Nodes) this keeps
what a request needs around the core operation: the inode table and handle table, the caches of resolved nodes
(invalidated by the core itself, caches.py), path leases for requests that yield the loop (pathlocks.py),
copy-ups aside (copyaside.py) and the permission checks for other users (permissions.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import trio

from . import acl
from .attrs import AttrChange, Owner
from .caches import NodeCache
from .copyaside import CopyAside
from .fetch import Pending
from .handles import Handles
from .idmap import IdMap
from .inodes import InodeTable
from .layers import Path
from .names import check_length, check_name
from .pathlocks import PathLocks
from .permissions import EXEC, READ, WRITE, Checker, Context
from .privxattr import CAPABILITY, image_capability
from .rename import Trees
from .syscalls import RENAME_EXCHANGE
from .tree import Node
from .union import UnionFS
from .upper import Content

L = TypeVar("L")  # what a listing is (ops.py's, with the attributes it hands the kernel)
READAHEAD = 128 * 1024  # the kernel's first readahead window (a block device's default read_ahead_kb)


class InodeFS(Generic[L]):
    def __init__(self, fs: UnionFS, ids: IdMap, check_others: bool, groups: Callable[[int], Iterable[int]]) -> None:
        self.fs = fs
        self.ids = ids
        self.inodes = InodeTable()
        self.handles: Handles[L] = Handles()
        self.cache: NodeCache[L] = NodeCache(fs)
        self.checks = Checker(check_others, os.geteuid(), ids, groups, self._access_acl)
        self.aside = CopyAside(fs)
        self.locks = PathLocks()  # what requests that yield the loop mid-way are changing
        if fs.upper is not None:
            fs.upper.alias = self._on_alias
            fs.upper.fresh = self.inodes.fresh

    def _on_alias(self, upper_st: os.stat_result, node: Node) -> None:
        nodeid = self.inodes.nodeid(node)
        self.inodes.alias(upper_st, nodeid)
        self.handles.copied(nodeid)

    def _access_acl(self, node: Node) -> acl.Acl | None:
        """The access ACL `node` shows, for the daemon's own permission checks; None without one."""
        try:
            return acl.parse(self.fs.getxattr(node, acl.ACCESS))
        except OSError:
            return None

    def follow_copy_ups(self) -> None:
        """Handles reading a lower file just copied up now read its upper copy."""
        if self.handles.copied_up:
            self.handles.follow_copy_ups(self._reopen)

    def _reopen(self, nodeid: int) -> int | None:
        return self.fs.reopen_from_upper(self.fs.resolve(self.inodes.path(nodeid)))

    def node(self, nodeid: int, *, attrs: bool = True) -> Node:
        """The entry the kernel knows as `nodeid` (see NodeCache.node)."""
        return self.cache.node(nodeid, self._resolve, attrs)

    def _resolve(self, nodeid: int) -> Node:
        return self.fs.resolve(self.inodes.path(nodeid))

    def parent_and_name(self, parent: int, name: str) -> tuple[Node, str]:
        """A request's parent directory (kept across changes that do not reshape the tree) and its name."""
        return self.fs.directory(self.inodes.path(parent)), name

    def owner(self, ctx: Context, umask: int) -> Owner:
        """Who a request's new entry belongs to, in the ids the layers store (`umask`: the request's)."""
        return Owner(self.ids.store_uid(ctx.uid), self.ids.store_gid(ctx.gid), umask)

    def leased(self, nodeid: int) -> tuple[Path, ...]:
        """What a request changing `nodeid` leases: its path, or none for a file whose every name is gone."""
        try:
            return (self.inodes.path(nodeid),)
        except OSError:
            return ()

    def named(self, parent: int, name: str) -> Path:
        """The path of `name` in directory `parent`, for a lease."""
        return (*self.inodes.path(parent), name)

    async def settle(self, parent: int, name: str) -> None:
        """For a request that changes `name` in `parent` without yielding the loop: wait until no exclusive lease
        covers it (see pathlocks)."""
        if self.locks.contended:
            await self.locks.settle(self.named(parent, name))

    # -- reading -----------------------------------------------------------------------------------------------

    def lookup(self, parent_id: int, name: str, ctx: Context | None) -> Node | None:
        parent, name = self.parent_and_name(parent_id, name)
        self.checks.require(ctx, parent, EXEC)
        check_length(name)  # every call naming it starts here: ENAMETOOLONG, not a cached "no such name"
        return self.fs.tree.lookup(parent, name)

    def stat(self, nodeid: int) -> tuple[os.stat_result, Node | None]:
        """What getattr shows: the entry's stat, or for an open file whose last name is gone its fd's."""
        try:
            node = self.node(nodeid)
        except OSError:
            fd = self.handles.fd_of(nodeid)
            if fd is None:
                raise
            return os.fstat(fd), None
        return node.st, node

    async def open(self, nodeid: int, flags: int, ctx: Context | None) -> tuple[int, Node]:
        """Open a file for the kernel: its new handle, and the node it opened."""
        if not flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            node = self.node(nodeid)
            self.checks.require(ctx, node, READ)
            pending = self.fs.placeholder(node)
            if pending is not None:
                fh, node = await self._open_fetched(nodeid, flags, pending)
            else:
                fh, node = self._opened(nodeid, flags, node)
            if node.st.st_size:
                # The kernel reads ahead at a file's first read; asked at the open, the disk works while the answer
                # travels and the reader gets to its read(2): a cold READ then finds its data on the way. (A hint:
                # where it fails, the READ reads as it would have.)
                with contextlib.suppress(OSError):
                    fd = self.handles.files[fh].fd
                    os.posix_fadvise(fd, 0, min(node.st.st_size, READAHEAD), os.POSIX_FADV_WILLNEED)
            return fh, node
        async with self.locks.shared(*self.leased(nodeid)):
            node = self.node(nodeid)
            if self.checks.foreign(ctx):
                access = flags & os.O_ACCMODE
                mask = (READ if access != os.O_WRONLY else 0) | (
                    WRITE if access != os.O_RDONLY or flags & os.O_TRUNC else 0
                )
                self.checks.require(ctx, node, mask)
            # A truncating open copies no data, but waits for a copy of the file under way: a metacopy fill writes
            # in place, and would write the old data over what comes after.
            content: Content = "empty" if flags & os.O_TRUNC else "full"
            if await self.aside.file(node, lambda: self.node(nodeid), content):
                node = self.node(nodeid)
            drops = stat.S_ISREG(node.st.st_mode) and self.checks.drops_setgid(ctx, node)
            if drops and flags & os.O_TRUNC:  # a truncation clears it at once
                node = self.fs.setattr(node, AttrChange(mode=node.st.st_mode & ~stat.S_ISGID))
                drops = False
            fh, node = self._opened(nodeid, flags, node)
            self.handles.files[fh].drops_setgid = drops
            return fh, node

    def written(self, fh: int) -> bool:
        """A write through `fh` is about to happen: clear the file's setgid bit where the writer's first write
        clears it (permissions.Checker.drops_setgid). Whether the mode changed (the kernel's copy is stale)."""
        handle = self.handles.files[fh]
        if not handle.drops_setgid:
            return False
        handle.drops_setgid = False
        node = self.node(handle.nodeid)
        if not node.st.st_mode & stat.S_ISGID:
            return False
        self.fs.setattr(node, AttrChange(mode=node.st.st_mode & ~stat.S_ISGID))
        return True

    async def _open_fetched(self, nodeid: int, flags: int, pending: Pending) -> tuple[int, Node]:
        """Open a file a lazy layer has yet to fetch: the fetch (a download) runs in a worker thread while other
        requests are served. Its fd becomes the handle's, unless the file changed meanwhile (copied up, replaced),
        which is then opened as it now is."""
        fd = await trio.to_thread.run_sync(pending.fetch)
        try:
            node = self.node(nodeid)
            same = self.fs.placeholder(node) == pending
        except BaseException:
            os.close(fd)
            raise
        if not same:
            os.close(fd)
            return self._opened(nodeid, flags, node)
        self.follow_copy_ups()
        return self.handles.open_file(nodeid, fd, True), node

    def _opened(self, nodeid: int, flags: int, node: Node) -> tuple[int, Node]:
        fd, node = self.fs.open(node, flags)
        self.follow_copy_ups()
        lower = node.layer != 0 or node.meta_only or self.fs.upper is None
        return self.handles.open_file(nodeid, fd, lower), node

    def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        handle = self.handles.files[fh]
        if handle.lower:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        self.fs.fallocate(handle.fd, mode, offset, length)

    def getxattr(self, nodeid: int, name: str) -> bytes:
        value = self.fs.getxattr(self.node(nodeid, attrs=False), name)
        if name in acl.NAMES and not self.ids.identity:
            value = acl.map_ids(value, self.ids.show_uid, self.ids.show_gid)
        return value

    # -- writing -----------------------------------------------------------------------------------------------

    async def setxattr(self, nodeid: int, name: str, value: bytes, ctx: Context | None) -> None:
        self.fs.check_xattr_change(name, True)
        async with self.locks.shared(*self.leased(nodeid)):
            node = await self._meta_copied_up(nodeid, ctx)
            if name == CAPABILITY:  # set in a user namespace: v3, for its root's uid (privxattr.py)
                value = image_capability(value, self.ids.store_uid)
            if name in acl.NAMES and not self.ids.identity:
                value = acl.map_ids(value, self.ids.store_uid, self.ids.store_gid)
            # an access ACL set by someone outside the file's group clears setgid (posix_acl_update_mode)
            drops = name == acl.ACCESS and self.checks.drops_setgid(ctx, node)
            self.fs.setxattr(node, name, value, drops_setgid=drops)
            self.follow_copy_ups()

    async def removexattr(self, nodeid: int, name: str, ctx: Context | None) -> None:
        self.fs.check_xattr_change(name, False)
        async with self.locks.shared(*self.leased(nodeid)):
            node = await self._meta_copied_up(nodeid, ctx)
            self.fs.removexattr(node, name)
            self.follow_copy_ups()

    async def _meta_copied_up(self, nodeid: int, ctx: Context | None) -> Node:
        """`nodeid`, checked writable for `ctx`, with a large file copied up aside where changing its metadata
        copies its data (metacopy off)."""
        node = self.node(nodeid)
        self.checks.require(ctx, node, WRITE)
        if await self.aside.file(node, lambda: self.node(nodeid), "meta"):
            node = self.node(nodeid)
        return node

    async def setattr(
        self, nodeid: int, change: AttrChange, fh: int | None, ctx: Context | None
    ) -> tuple[os.stat_result, Node | None]:
        """chmod, chown, truncate, utimes; through handle `fh` when given. Returns what getattr would."""
        async with self.locks.shared(*self.leased(nodeid)):
            handle = self.handles.files.get(fh) if fh is not None else None
            own_fd = handle.fd if handle is not None and not handle.lower else None
            try:
                node = self.node(nodeid)
            except OSError as exc:  # every name gone: an fd still open on the upper file may change it
                fd = own_fd if own_fd is not None else self.handles.fd_of(nodeid, upper=True)
                if exc.errno != errno.ENOENT or self.checks.foreign(ctx) or fd is None:
                    raise
                return self.fs.setattr_unlinked(fd, change), None
            self.checks.require_setattr(ctx, node, change)
            change = self._setgid_kept(ctx, node, change)
            content: Content = "meta" if change.size is None else "empty" if change.size == 0 else "full"
            if await self.aside.file(node, lambda: self.node(nodeid), content):
                node = self.node(nodeid)
            node = self.fs.setattr(node, change, own_fd)
            self.follow_copy_ups()
            return node.st, node

    def _setgid_kept(self, ctx: Context | None, node: Node, change: AttrChange) -> AttrChange:
        """`change` with the setgid bit cleared where the kernel clears it for this caller: a chmod (also for
        a directory) or a truncation of a regular file by someone outside the file's group."""
        if change.mode is not None and self.checks.drops_setgid(ctx, node, change.gid, change.mode):
            return dataclasses.replace(change, mode=change.mode & ~stat.S_ISGID)
        if change.size is not None and stat.S_ISREG(node.st.st_mode) and self.checks.drops_setgid(ctx, node):
            return dataclasses.replace(change, mode=(change.mode or node.st.st_mode) & ~stat.S_ISGID)
        return change

    async def create(
        self, parent_id: int, name: str, mode: int, flags: int, owner: Owner, ctx: Context | None
    ) -> tuple[int, Node]:
        """A new file, open: its handle and node."""
        await self.settle(parent_id, name)
        parent, name = self.parent_and_name(parent_id, name)
        self.checks.require(ctx, parent, WRITE | EXEC)
        fd, node = self.fs.create(parent, name, mode, flags, owner)
        return self.handles.open_file(self.inodes.nodeid(node), fd, False), node

    async def new_parent(self, parent_id: int, name: str, ctx: Context | None) -> tuple[Node, str]:
        """The directory a new entry `name` goes in, checked for `ctx`, once no lease covers the name."""
        await self.settle(parent_id, name)
        parent, name = self.parent_and_name(parent_id, name)
        self.checks.require(ctx, parent, WRITE | EXEC)
        return parent, name

    async def link(self, nodeid: int, parent_id: int, name: str, ctx: Context | None) -> Node:
        async with self.locks.shared(*self.leased(nodeid), self.named(parent_id, name)):
            parent, name = self.parent_and_name(parent_id, name)
            check_name(name)  # before the copy-up
            self.checks.require(ctx, parent, WRITE | EXEC)
            node = self.node(nodeid)
            if await self.aside.file(node, lambda: self.node(nodeid)):
                parent, name = self.parent_and_name(parent_id, name)
                node = self.node(nodeid)
            node = self.fs.link(node, parent, name)
            self.follow_copy_ups()
            return node

    async def remove(self, parent_id: int, name: str, directory: bool, ctx: Context | None) -> None:
        """unlink, or rmdir when `directory`."""
        await self.settle(parent_id, name)
        parent, name = self.parent_and_name(parent_id, name)
        node = self.fs.lookup(parent, name)
        self.checks.require_delete(ctx, parent, node)
        if directory:
            self.fs.rmdir(parent, name)
            self.inodes.unlinked(self.inodes.nodeid(node))
            return
        self.fs.unlink(parent, name, node)
        if node.st.st_nlink <= 1:
            self.inodes.unlinked(self.inodes.nodeid(node))
        else:
            self.inodes.name_gone(self.inodes.nodeid(node), parent_id, name)

    async def rename(
        self, old_parent_id: int, old: str, new_parent_id: int, new: str, flags: int, ctx: Context | None
    ) -> None:
        check_length(old)  # before anything is looked up or copied up
        check_length(new)
        names = (self.named(old_parent_id, old), self.named(new_parent_id, new))
        old_parent, old = self.parent_and_name(old_parent_id, old)
        new_parent, new = self.parent_and_name(new_parent_id, new)
        # A directory moves once the changes under way inside it are done, and a merged or lower one copies its
        # tree off the request loop: nothing at, in or above either name changes meanwhile; elsewhere, requests
        # go on.
        moved = [self.fs.tree.lookup(old_parent, old)]
        if flags & RENAME_EXCHANGE:
            moved.append(self.fs.tree.lookup(new_parent, new))
        if not any(node is not None and node.is_dir for node in moved):
            async with self.locks.shared(*names):
                await self._rename(old_parent_id, old, new_parent_id, new, flags, ctx, False)
            return
        async with self.locks.exclusive(*names):
            await self._rename(old_parent_id, old, new_parent_id, new, flags, ctx, True)

    async def _rename(
        self, old_id: int, old: str, new_id: int, new: str, flags: int, ctx: Context | None, exclusive: bool
    ) -> None:
        old_parent, old = self.parent_and_name(old_id, old)
        src = self.fs.lookup(old_parent, old)
        self.checks.require_delete(ctx, old_parent, src)
        if not src.is_dir and await self.aside.file(src, lambda: self.fs.lookup(*self.parent_and_name(old_id, old))):
            old_parent, old = self.parent_and_name(old_id, old)
            src = self.fs.lookup(old_parent, old)
            self.checks.require_delete(ctx, old_parent, src)
        new_parent, new = self.parent_and_name(new_id, new)
        src_id = self.inodes.nodeid(src)
        dst = self.fs.tree.lookup(new_parent, new)
        dst_id = self.inodes.nodeid(dst) if dst is not None else 0
        if dst is not None:
            self.checks.require_delete(ctx, new_parent, dst)
        else:
            self.checks.require(ctx, new_parent, WRITE | EXEC)
        built: Trees = {}
        if exclusive:  # a directory: the trees it takes are copied aside (else here and now, should any appear)
            built = await self.aside.trees(old_parent, old, new_parent, new, flags)
            try:
                old_parent, old = self.parent_and_name(old_id, old)
                new_parent, new = self.parent_and_name(new_id, new)
            except BaseException:
                for made in built.values():
                    self.fs.discard_tree(made)
                raise
        self.fs.rename(old_parent, old, new_parent, new, flags, built)  # (which removes what it leaves unused)
        self.inodes.renamed(src_id, (old_id, old), dst, dst_id, (new_id, new), bool(flags & RENAME_EXCHANGE))
        self.follow_copy_ups()
