"""The pyfuse3 Operations: a thin mapping of FUSE requests onto UnionFS. The only module raising FUSEError."""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import stat
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from . import acl
from .copyup import Content, TreePlanner
from .idmap import IdMap
from .inodes import ROOT_INODE, InodeTable
from .layers import Path
from .listing import Listing
from .pathlocks import PathLocks
from .permissions import EXEC, READ, WRITE, allowed, may_delete
from .privxattr import CAPABILITY, image_capability
from .syscalls import RENAME_EXCHANGE
from .tree import Node
from .union import AttrChange, Owner, Trees, UnionFS, check_length, check_name

log = logging.getLogger("unionfs")

#: Handlers after which cached nodes and listings still hold: they change nothing, or say themselves what they
#: made stale (open through a copy-up, which bumps the generation; write, through write_fd).
KEEPS_CACHES = frozenset(
    {
        "lookup",
        "forget",
        "getattr",
        "readlink",
        "open",
        "read",
        "write",
        "flush",
        "release",
        "opendir",
        "readdir",
        "releasedir",
        "fsyncdir",
        "statfs",
        "access",
        "getxattr",
        "listxattr",
        "fsync",
    }
)
NODE_CACHE = 65536
#: a listed child: its node, its inode number and the attributes readdirplus hands the kernel
Entry = tuple[Node, int, pyfuse3.EntryAttributes]
LISTING_CACHE = 1024

P = ParamSpec("P")
R = TypeVar("R")


def translate(func: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Let only FUSEError leave a handler: OSError keeps its errno, anything else is a bug answered EIO."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = await func(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s%r -> %s", func.__name__, args[1:], errno.errorcode.get(exc.errno or 0, exc.errno))
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("internal error in %s%r", func.__name__, args[1:])
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            ops = args[0]
            assert isinstance(ops, UnionOperations)
            if func.__name__ not in KEEPS_CACHES:
                ops.fs.generation += 1  # whatever it changed, cached resolutions and listings are stale
            ops.fs.end_request()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s%r -> ok", func.__name__, args[1:])
        return result

    return wrapper


def kernel_at_least(major: int, minor: int) -> bool:
    release = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return release is not None and (int(release[1]), int(release[2])) >= (major, minor)


#: Direct I/O for write-only handles: only where the kernel invalidates cached pages of the written range.
DIRECT_WRITES = kernel_at_least(6, 6)


@dataclass(slots=True)
class FileHandle:
    nodeid: int
    fd: int
    lower: bool  # reading a lower layer's file: must follow the file when it is copied up


class UnionOperations(pyfuse3.Operations):
    enable_writeback_cache = False
    # The umask is ours to apply (FUSE_CAP_DONT_MASK, with the patched pyfuse3): a default ACL replaces it
    # (union.py). Stock, the kernel has applied it already, and applying it again changes nothing.
    apply_umask = True

    def __init__(self, fs: UnionFS, timeout: float, ids: IdMap | None = None, check_others: bool = False) -> None:
        super().__init__()
        self.check_others = check_others  # unprivileged with allow_other: the kernel checks no one
        self.owner_uid = os.geteuid()
        self.fs = fs
        # how long the kernel may trust entries, attributes and failed lookups: every change passes through it
        self.timeout = timeout
        self.ids = ids or IdMap()
        self.sync_files = True  # fsync=0: fsync(2) and fdatasync(2) on the mount sync nothing (see fsync)
        self.inodes = InodeTable()
        self._files: dict[int, FileHandle] = {}
        self._dirs: dict[int, tuple[int, Node, Listing[Entry]]] = {}
        # With a pyfuse3 that names the directory in readdir() when there is no opendir, answering opendir
        # ENOSYS makes the kernel cache listings itself (FOPEN_CACHE_DIR) and stop sending opendir and
        # releasedir. Not for other users of an unprivileged mount: opendir is where we check them.
        self.no_opendir = not check_others and getattr(pyfuse3, "READDIR_INODE_WITHOUT_OPENDIR", False)
        self._next_fh = 1
        self._copied: set[int] = set()
        self._copying: dict[tuple[int, int], trio.Event] = {}  # files (layer, inode) being copied up
        self.locks = PathLocks()  # what requests that yield the loop mid-way are changing
        self._cache_generation = -1
        self._nodes: dict[int, Node] = {}
        self._written: set[int] = set()  # cached nodes whose data was written since: their size and times are stale
        self._listings: dict[int, Listing[Entry]] = {}
        if fs.upper is not None:
            fs.upper.alias = self._on_alias
            fs.upper.fresh = self.inodes.fresh

    # -- helpers -----------------------------------------------------------------------------------------------

    def _on_alias(self, upper_st: os.stat_result, node: Node) -> None:
        nodeid = self.inodes.nodeid(node)
        self.inodes.alias(upper_st, nodeid)
        self._copied.add(nodeid)

    def _open_fd(self, inode: int, *, upper: bool = False) -> int | None:
        """An fd some handle holds open on `inode` (`upper`: on its upper file), or None."""
        return next((h.fd for h in self._files.values() if h.nodeid == inode and not (upper and h.lower)), None)

    def _follow_copy_ups(self) -> None:
        """Point read-only fds of files just copied up at their upper copies: one view of each file."""
        if not self._copied:
            return
        copied, self._copied = self._copied, set()
        for handle in self._files.values():
            if handle.lower and handle.nodeid in copied:
                try:
                    fd = self.fs.reopen_from_upper(self.fs.resolve(self.inodes.path(handle.nodeid)), os.O_RDONLY)
                except OSError:
                    continue
                if fd is not None:
                    os.close(handle.fd)
                    handle.fd, handle.lower = fd, False

    async def _copy_up_aside(self, node: Node, locate: Callable[[], Node], content: Content = "full") -> bool:
        """Copy a large file `node` up, for `content`, with its data copied by a worker thread (a lower file's
        into a new upper file, a metadata-only file's in place), so that other requests are served meanwhile;
        a request for the same file waits for that copy-up instead of copying again. Small files and
        everything else are left to the synchronous path. Returns whether it awaited: other requests may then
        have changed the tree, and the caller must resolve again (`locate` finds the file anew). The caller
        holds a lease (self.locks) on the paths it changes."""
        awaited = False
        while (busy := self._copying.get(key := (node.layer, node.st.st_ino))) is not None:
            await busy.wait()
            node, awaited = locate(), True
        staged = self.fs.stage_copy_up(node, content)
        if staged is None:
            return awaited
        done = self._copying[key] = trio.Event()
        try:
            await trio.to_thread.run_sync(staged.run)
            self.fs.copy_up_staged(locate(), staged)
        finally:
            self.fs.unstage(staged)
            del self._copying[key]
            done.set()
        return True

    def _node(self, nodeid: int, *, attrs: bool = True) -> Node:
        """The entry the kernel knows as `nodeid`, resolved again only after the upper changed. Writing a file's
        data leaves its place in the tree as it was: with attrs=False, a node cached before the writes will do
        (its size and times may be stale), for requests that need only where the entry is."""
        if self._cache_generation != self.fs.generation:
            self._nodes.clear()
            self._written.clear()
            self._listings.clear()
            self._cache_generation = self.fs.generation
        node = self._nodes.get(nodeid)
        if node is None or (attrs and nodeid in self._written):
            node = self.fs.resolve(self.inodes.path(nodeid))
            if len(self._nodes) >= NODE_CACHE:
                self._nodes.clear()
                self._written.clear()
            self._nodes[nodeid] = node
            self._written.discard(nodeid)
        return node

    def _listing(self, inode: int, node: Node) -> Listing[Entry]:
        """A directory's merged entries with their numbers and attributes, built once per upper state."""
        listing = self._listings.get(inode)
        if listing is None:
            entries: list[Entry] = []
            for child in self.fs.children(node):
                nodeid = self.inodes.nodeid(child)
                entries.append((child, nodeid, self._attrs(child.st, nodeid, child)))
            listing = Listing(entries, lambda entry: entry[0].name)
            if len(self._listings) >= LISTING_CACHE:
                self._listings.clear()
            self._listings[inode] = listing
        return listing

    def _new_fh(self) -> int:
        self._next_fh += 1
        return self._next_fh

    def _attrs(self, st: os.stat_result, nodeid: int, node: Node | None) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = nodeid
        attr.generation = 0
        attr.st_mode = st.st_mode
        # a merged directory's link count is unknowable cheaply; 1 tells find(1) not to rely on it
        attr.st_nlink = 1 if node is not None and len(node.layers) > 1 else st.st_nlink
        attr.st_uid = self.ids.show_uid(st.st_uid)
        attr.st_gid = self.ids.show_gid(st.st_gid)
        attr.st_rdev = st.st_rdev
        attr.st_size = st.st_size
        attr.st_blksize = st.st_blksize
        attr.st_blocks = st.st_blocks
        attr.st_atime_ns = st.st_atime_ns
        attr.st_mtime_ns = st.st_mtime_ns
        attr.st_ctime_ns = st.st_ctime_ns
        attr.entry_timeout = self.timeout
        attr.attr_timeout = self.timeout
        return attr

    def _entry(self, node: Node, parent: int) -> pyfuse3.EntryAttributes:
        nodeid = self.inodes.nodeid(node)
        attr = self._attrs(node.st, nodeid, node)
        self.inodes.remember(nodeid, parent, node.name)
        return attr

    def _foreign(self, ctx: Any) -> bool:
        return self.check_others and ctx is not None and ctx.uid not in (self.owner_uid, 0)

    def _require(self, ctx: Any, node: Node, mask: int) -> None:
        """For another user of an unprivileged mount: the POSIX check the kernel would have made."""
        if self._foreign(ctx):
            uid = self.ids.store_uid(ctx.uid)
            gids = {self.ids.store_gid(g) for g in (ctx.gid, *pyfuse3.get_sup_groups(ctx.pid))}
            if not allowed(node.st, uid, gids, mask, self._access_acl(node)):
                raise pyfuse3.FUSEError(errno.EACCES)

    def _access_acl(self, node: Node) -> acl.Acl | None:
        """The access ACL `node` shows, for the daemon's own permission checks; None without one."""
        try:
            return acl.parse(self.fs.getxattr(node, acl.ACCESS))
        except OSError:
            return None

    def _require_delete(self, ctx: Any, parent: Node, victim: Node) -> None:
        self._require(ctx, parent, WRITE | EXEC)
        if self._foreign(ctx) and not may_delete(parent.st, victim.st, self.ids.store_uid(ctx.uid)):
            raise pyfuse3.FUSEError(errno.EPERM)

    def _owner(self, ctx: Any) -> Owner:
        """Who a request's new entry belongs to, in the ids the layers store."""
        return Owner(self.ids.store_uid(ctx.uid), self.ids.store_gid(ctx.gid), ctx.umask)

    def _leased(self, inode: int) -> tuple[Path, ...]:
        """What a request changing `inode` leases: its path, or none for a file whose every name is gone."""
        try:
            return (self.inodes.path(inode),)
        except OSError:
            return ()

    async def _settle(self, parent: int, name: bytes) -> None:
        """For a request that changes `name` in `parent` without yielding the loop: wait until no exclusive lease
        covers it (see pathlocks)."""
        if self.locks.contended:
            await self.locks.settle(self._named(parent, name))

    def _named(self, parent: int, name: bytes) -> Path:
        """The path of `name` in directory `parent`, for a lease."""
        return (*self.inodes.path(parent), os.fsdecode(name))

    def _child(self, parent: int, name: bytes) -> tuple[Node, str]:
        """A request's parent directory (kept across changes that do not reshape the tree) and name."""
        return self.fs.directory(self.inodes.path(parent)), os.fsdecode(name)

    # -- reading -----------------------------------------------------------------------------------------------

    @translate
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        parent_node, child = self._child(parent_inode, name)
        self._require(ctx, parent_node, EXEC)
        check_length(child)  # every call naming it starts here: ENAMETOOLONG, not a cached "no such name"
        node = self.fs.tree.lookup(parent_node, child)
        if node is None:
            negative = pyfuse3.EntryAttributes()
            negative.st_ino = 0
            negative.entry_timeout = self.timeout
            return negative
        return self._entry(node, parent_inode)

    @translate
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for nodeid, count in inode_list:
            self.inodes.forget(nodeid, count)

    @translate
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        try:
            node = self._node(inode)
        except OSError:
            fd = self._open_fd(inode)  # an open file whose last name is gone
            if fd is None:
                raise
            return self._attrs(os.fstat(fd), inode, None)
        return self._attrs(node.st, inode, node)

    @translate
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return os.fsencode(self.fs.readlink(self._node(inode)))

    @translate
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        if not flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            return self._open_reading(inode, flags, ctx)
        async with self.locks.shared(*self._leased(inode)):
            return await self._open_writing(inode, flags, ctx)

    def _open_reading(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        node = self._node(inode)
        self._require(ctx, node, READ)
        return self._opened(inode, flags, node)

    async def _open_writing(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if self._foreign(ctx):
            access = flags & os.O_ACCMODE
            mask = (READ if access != os.O_WRONLY else 0) | (
                WRITE if access != os.O_RDONLY or flags & os.O_TRUNC else 0
            )
            self._require(ctx, node, mask)
        # A truncating open copies no data, but waits for a copy of the file under way: a metacopy fill writes in
        # place, and would write the old data over what comes after.
        content: Content = "empty" if flags & os.O_TRUNC else "full"
        if await self._copy_up_aside(node, lambda: self._node(inode), content):
            node = self._node(inode)
        return self._opened(inode, flags, node)

    def _opened(self, inode: int, flags: int, node: Node) -> pyfuse3.FileInfo:
        fd, node = self.fs.open(node, flags)
        self._follow_copy_ups()
        fh = self._new_fh()
        lower = node.layer != 0 or node.meta_only or self.fs.upper is None
        self._files[fh] = FileHandle(inode, fd, lower)
        return self._file_info(fh, flags, node)

    @translate
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(self.read_fd(fh), size, off)

    def read_fd(self, fh: int) -> int:
        """The file a READ of `fh` reads from: the patched pyfuse3 has libfuse splice the data from it into the
        reply, without a copy in the daemon (`scripts/patch_pyfuse3.py`); a stock one calls read() above. A
        handle on a lower file follows it to the upper copy once it is copied up (`_follow_copy_ups`)."""
        fd = self._files[fh].fd
        if log.isEnabledFor(logging.DEBUG):
            log.debug("read_fd(%d,) -> %d", fh, fd)
        return fd

    @translate
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return os.pwrite(self.write_fd(fh), buf, off)

    def write_fd(self, fh: int) -> int:
        """The upper file a WRITE to `fh` lands in: the patched pyfuse3 has libfuse write the data there without
        handing it to Python (`scripts/patch_pyfuse3.py`); a stock one calls write() above."""
        handle = self._files[fh]
        # The file's size and times are stale now, where they are cached: its node and any listing.
        self._written.add(handle.nodeid)
        self._listings.clear()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("write_fd(%d,) -> %d", fh, handle.fd)
        return handle.fd

    @translate
    async def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        """Called by a pyfuse3 with the fallocate patch (`scripts/patch_pyfuse3.py`); a stock one answers ENOSYS,
        which the kernel turns into EOPNOTSUPP. The kernel sends it only for handles open for writing, whose files
        are upper files; it passes on only KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE (COLLAPSE_RANGE and INSERT_RANGE
        it refuses itself), then drops the attributes it cached."""
        handle = self._files[fh]
        if handle.lower:
            raise pyfuse3.FUSEError(errno.EBADF)
        self.fs.fallocate(handle.fd, mode, offset, length)  # (a change: cached nodes and listings go)

    @translate
    async def flush(self, fh: int) -> None:
        # Nothing to do at close(2): saying so once (ENOSYS) stops the kernel sending FLUSH for every close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @translate
    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh)
        os.close(handle.fd)

    @translate
    async def fsync(self, fh: int, datasync: bool) -> None:
        # fsync=0: ENOSYS, once; the kernel then answers every fsync(2) and fdatasync(2) itself, with success.
        if not self.sync_files:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        fd = self._files[fh].fd
        if datasync:
            os.fdatasync(fd)
        else:
            os.fsync(fd)

    @translate
    async def opendir(self, inode: int, ctx: Any) -> int:
        if self.no_opendir:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        node = self._node(inode)
        self._require(ctx, node, READ)
        listing = self._listing(inode, node)
        fh = self._new_fh()
        self._dirs[fh] = (inode, node, listing)
        return fh

    @translate
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        if self.no_opendir:  # `fh` is the directory's inode
            inode = fh
            node = self._node(inode)
            listing = self._listing(inode, node)
        else:
            inode, node, listing = self._dirs[fh]
        if start_id == 0:  # "." and "..", as a local filesystem lists them (no lookup count for them)
            if not pyfuse3.readdir_reply(token, b".", self._attrs(node.st, inode, node), 1):
                return
            start_id = 1
        if start_id == 1:
            if not pyfuse3.readdir_reply(token, b"..", self._parent_attrs(inode), 2):
                return
            start_id = 2
        entries, cookies = listing.entries, listing.cookies
        for index in range(listing.after(start_id), len(entries)):
            child, nodeid, attr = entries[index]
            if not pyfuse3.readdir_reply(token, os.fsencode(child.name), attr, cookies[index]):
                return
            self.inodes.remember(nodeid, inode, child.name)

    def _parent_attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        path = self.inodes.path(inode)
        parent = self.fs.resolve(path[:-1])
        return self._attrs(parent.st, self.inodes.nodeid(parent), parent)

    @translate
    async def releasedir(self, fh: int) -> None:
        del self._dirs[fh]

    @translate
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        if not self.sync_files:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return None

    @translate
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        st = self.fs.statvfs()
        data = pyfuse3.StatvfsData()
        for field in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail"):
            setattr(data, field, getattr(st, field))
        data.f_namemax = st.f_namemax
        return data

    @translate
    async def access(self, inode: int, mode: int, ctx: Any) -> bool:
        node = self._node(inode)
        self._require(ctx, node, mode & (READ | WRITE | EXEC))
        return True

    @translate
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        value = self.fs.getxattr(self._node(inode, attrs=False), os.fsdecode(name))
        if os.fsdecode(name) in acl.NAMES and not self.ids.identity:
            value = acl.map_ids(value, self.ids.show_uid, self.ids.show_gid)
        return value

    @translate
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return [os.fsencode(n) for n in self.fs.listxattr(self._node(inode, attrs=False))]

    # -- writing -----------------------------------------------------------------------------------------------

    @translate
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        self.fs.check_xattr_change(os.fsdecode(name), True)
        async with self.locks.shared(*self._leased(inode)):
            node = await self._meta_copied_up(inode, ctx)
            if os.fsdecode(name) == CAPABILITY:  # set in a user namespace: v3, for its root's uid (privxattr.py)
                value = image_capability(value, self.ids.store_uid)
            if os.fsdecode(name) in acl.NAMES and not self.ids.identity:
                value = acl.map_ids(value, self.ids.store_uid, self.ids.store_gid)
            self.fs.setxattr(node, os.fsdecode(name), value)
            self._follow_copy_ups()
        if os.fsdecode(name) in acl.NAMES:
            self._mode_changed(inode)

    @translate
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        self.fs.check_xattr_change(os.fsdecode(name), False)
        async with self.locks.shared(*self._leased(inode)):
            node = await self._meta_copied_up(inode, ctx)
            self.fs.removexattr(node, os.fsdecode(name))
            self._follow_copy_ups()
        if os.fsdecode(name) in acl.NAMES:
            self._mode_changed(inode)

    def _mode_changed(self, inode: int) -> None:
        """An ACL set the mode: the kernel, which asked for an xattr and not for a chmod, must forget the
        attributes it holds (without FUSE_POSIX_ACL it forgets only the change time)."""
        try:
            pyfuse3.invalidate_inode(inode, attr_only=True)
        except OSError:
            pass  # (the kernel no longer knows the inode: nothing is cached)

    async def _meta_copied_up(self, inode: int, ctx: Any) -> Node:
        """`inode`, checked writable for `ctx`, with a large file copied up aside where changing its metadata
        copies its data (metacopy off)."""
        node = self._node(inode)
        self._require(ctx, node, WRITE)
        if await self._copy_up_aside(node, lambda: self._node(inode), "meta"):
            node = self._node(inode)
        return node

    @translate
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        async with self.locks.shared(*self._leased(inode)):
            return await self._setattr(inode, attr, fields, fh, ctx)

    async def _setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        handle = self._files.get(fh) if fh is not None else None
        change = AttrChange(
            mode=attr.st_mode if fields.update_mode else None,
            uid=self.ids.store_uid(attr.st_uid) if fields.update_uid else None,
            gid=self.ids.store_gid(attr.st_gid) if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        own_fd = handle.fd if handle is not None and not handle.lower else None
        try:
            node = self._node(inode)
        except OSError as exc:  # every name gone: an fd still open on the upper file may change it
            fd = own_fd if own_fd is not None else self._open_fd(inode, upper=True)
            if exc.errno != errno.ENOENT or self._foreign(ctx) or fd is None:
                raise
            return self._attrs(self.fs.setattr_unlinked(fd, change), inode, None)
        if self._foreign(ctx):
            self._check_setattr(ctx, node, attr, fields)
        content: Content = "meta" if change.size is None else "empty" if change.size == 0 else "full"
        if await self._copy_up_aside(node, lambda: self._node(inode), content):
            node = self._node(inode)
        node = self.fs.setattr(node, change, own_fd)
        self._follow_copy_ups()
        return self._attrs(node.st, inode, node)

    def _check_setattr(self, ctx: Any, node: Node, attr: Any, fields: Any) -> None:
        uid = self.ids.store_uid(ctx.uid)
        owner = uid == node.st.st_uid
        if fields.update_uid and self.ids.store_uid(attr.st_uid) != node.st.st_uid:
            raise pyfuse3.FUSEError(errno.EPERM)
        if fields.update_gid and not owner:
            raise pyfuse3.FUSEError(errno.EPERM)
        if fields.update_mode and not owner:
            raise pyfuse3.FUSEError(errno.EPERM)
        if (fields.update_atime or fields.update_mtime) and not owner:
            self._require(ctx, node, WRITE)
        if fields.update_size:
            self._require(ctx, node, WRITE)

    @translate
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        await self._settle(parent_inode, name)
        parent, child = self._child(parent_inode, name)
        self._require(ctx, parent, WRITE | EXEC)
        fd, node = self.fs.create(parent, child, mode, flags, self._owner(ctx))
        fh = self._new_fh()
        attr = self._entry(node, parent_inode)
        self._files[fh] = FileHandle(attr.st_ino, fd, False)
        return self._file_info(fh, flags, node), attr

    def _file_info(self, fh: int, flags: int, node: Node) -> pyfuse3.FileInfo:
        """Every change to a file's data passes through the kernel, which keeps its page cache up to date: the
        cache can outlive the open for upper files as well as lower ones (keep_cache).

        What a write-only handle writes goes straight to the daemon (direct I/O): a page-cache write would copy
        each page once more into the mount's cache, for a handle that can neither read nor map it. Linux 6.6
        and later drop the range's cached pages before such a write, so other handles never read stale data;
        older kernels do not, and there every handle writes through the page cache. So does a handle on a file
        whose privileges a write must strip: the kernel strips them only on the page-cache path, and on the
        direct one leaves it to the daemon without libfuse saying when."""
        direct = DIRECT_WRITES and flags & os.O_ACCMODE == os.O_WRONLY and not self._privileged(node)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=direct)

    def _privileged(self, node: Node) -> bool:
        """Whether `node` carries what a write strips: setuid, setgid with group execute, file capabilities."""
        mode = node.st.st_mode
        if mode & stat.S_ISUID or mode & (stat.S_ISGID | stat.S_IXGRP) == stat.S_ISGID | stat.S_IXGRP:
            return True
        try:
            self.fs.getxattr(node, "security.capability")
        except OSError:
            return False
        return True

    @translate
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        await self._settle(parent_inode, name)
        parent, child = self._child(parent_inode, name)
        self._require(ctx, parent, WRITE | EXEC)
        return self._entry(self.fs.mkdir(parent, child, mode, self._owner(ctx)), parent_inode)

    @translate
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> pyfuse3.EntryAttributes:
        await self._settle(parent_inode, name)
        parent, child = self._child(parent_inode, name)
        self._require(ctx, parent, WRITE | EXEC)
        return self._entry(self.fs.mknod(parent, child, mode, rdev, self._owner(ctx)), parent_inode)

    @translate
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        await self._settle(parent_inode, name)
        parent, child = self._child(parent_inode, name)
        self._require(ctx, parent, WRITE | EXEC)
        node = self.fs.symlink(parent, child, os.fsdecode(target), self._owner(ctx))
        return self._entry(node, parent_inode)

    @translate
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        async with self.locks.shared(*self._leased(inode), self._named(new_parent_inode, new_name)):
            return await self._link(inode, new_parent_inode, new_name, ctx)

    async def _link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        parent, child = self._child(new_parent_inode, new_name)
        check_name(child)  # before the copy-up
        self._require(ctx, parent, WRITE | EXEC)
        node = self._node(inode)
        if await self._copy_up_aside(node, lambda: self._node(inode)):
            parent, child = self._child(new_parent_inode, new_name)
            node = self._node(inode)
        node = self.fs.link(node, parent, child)
        self._follow_copy_ups()
        return self._entry(node, new_parent_inode)

    @translate
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self._settle(parent_inode, name)
        parent, child = self._child(parent_inode, name)
        node = self.fs.lookup(parent, child)
        self._require_delete(ctx, parent, node)
        self.fs.unlink(parent, child)
        if node.st.st_nlink <= 1:
            self.inodes.unlinked(self.inodes.nodeid(node))
        else:
            self.inodes.name_gone(self.inodes.nodeid(node), parent_inode, child)

    @translate
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self._settle(parent_inode, name)
        parent, child = self._child(parent_inode, name)
        node = self.fs.lookup(parent, child)
        self._require_delete(ctx, parent, node)
        self.fs.rmdir(parent, child)
        self.inodes.unlinked(self.inodes.nodeid(node))

    @translate
    async def rename(
        self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes, flags: int, ctx: Any
    ) -> None:
        check_length(os.fsdecode(name_old))  # before anything is looked up or copied up
        check_length(os.fsdecode(name_new))
        names = (self._named(parent_inode_old, name_old), self._named(parent_inode_new, name_new))
        old_parent, old = self._child(parent_inode_old, name_old)
        new_parent, new = self._child(parent_inode_new, name_new)
        # A directory moves once the changes under way inside it are done, and a merged or lower one copies its
        # tree off the request loop: nothing at, in or above either name changes meanwhile; elsewhere, requests
        # go on.
        moved = [self.fs.tree.lookup(old_parent, old)]
        if flags & RENAME_EXCHANGE:
            moved.append(self.fs.tree.lookup(new_parent, new))
        directory = any(node is not None and node.is_dir for node in moved)
        if not directory:
            async with self.locks.shared(*names):
                await self._rename(parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx, False)
            return
        async with self.locks.exclusive(*names):
            await self._rename(parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx, True)

    async def _rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
        exclusive: bool,
    ) -> None:
        old_parent, old = self._child(parent_inode_old, name_old)
        src = self.fs.lookup(old_parent, old)
        self._require_delete(ctx, old_parent, src)
        if not src.is_dir and await self._copy_up_aside(
            src, lambda: self.fs.lookup(*self._child(parent_inode_old, name_old))
        ):
            old_parent, old = self._child(parent_inode_old, name_old)
            src = self.fs.lookup(old_parent, old)
            self._require_delete(ctx, old_parent, src)
        new_parent, new = self._child(parent_inode_new, name_new)
        src_id = self.inodes.nodeid(src)
        dst = self.fs.tree.lookup(new_parent, new)
        dst_id = self.inodes.nodeid(dst) if dst is not None else 0
        if dst is not None:
            self._require_delete(ctx, new_parent, dst)
        else:
            self._require(ctx, new_parent, WRITE | EXEC)
        built: Trees = {}
        if exclusive:  # a directory: the trees it takes are copied aside (else here and now, should any appear)
            built = await self._build_trees(old_parent, old, new_parent, new, flags)
            try:
                old_parent, old = self._child(parent_inode_old, name_old)
                new_parent, new = self._child(parent_inode_new, name_new)
            except BaseException:
                for made in built.values():
                    self.fs.discard_tree(made)
                raise
        self.fs.rename(old_parent, old, new_parent, new, flags, built)  # (which removes what it leaves unused)
        if flags & RENAME_EXCHANGE:
            if dst_id != src_id:  # (dst exists: the exchange needed it)
                self.inodes.moved(dst_id, parent_inode_old, old, (parent_inode_new, new))
            self.inodes.moved(src_id, parent_inode_new, new, (parent_inode_old, old))
            self._follow_copy_ups()
            return
        if dst is not None:
            if dst_id != src_id and (dst.is_dir or dst.st.st_nlink <= 1):
                self.inodes.unlinked(dst_id)
            elif dst_id != src_id:
                self.inodes.name_gone(dst_id, parent_inode_new, new)
        self.inodes.moved(src_id, parent_inode_new, new, (parent_inode_old, old))
        self._follow_copy_ups()

    async def _build_trees(self, old_parent: Node, old: str, new_parent: Node, new: str, flags: int) -> Trees:
        """Copies of the directory trees this rename moves, built by a worker thread under the work dir. Files
        that must be copied up first (see TreePlanner) are, large ones aside too."""
        built: Trees = {}
        try:
            for tree in self.fs.trees_to_copy(old_parent, old, new_parent, new, flags):
                planner = await self._planned(tree)
                while planner.first:
                    for child in planner.first:
                        await self._copy_up_path(child.path)
                    planner = await self._planned(self.fs.resolve(tree.path))
                built[tree.path] = await trio.to_thread.run_sync(self.fs.build_tree, planner.plan)
        except BaseException:
            for made in built.values():
                self.fs.discard_tree(made)
            raise
        return built

    async def _planned(self, tree: Node) -> TreePlanner:
        """The plan of a tree's copy, listed a directory at a time with other requests served in between."""
        planner = self.fs.tree_planner(tree)
        while planner.step():
            await trio.lowlevel.checkpoint()
        return planner

    async def _copy_up_path(self, path: Path) -> None:
        """Copy up the file at `path` whole: a large one's data aside, as _copy_up_aside does."""

        def locate() -> Node:
            return self.fs.resolve(path)

        await self._copy_up_aside(locate(), locate)
        self.fs.copy_up(locate())  # whatever is left: a small file, a link, a device; or nothing


__all__ = ["ROOT_INODE", "UnionOperations"]
