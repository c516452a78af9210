"""The pyfuse3 Operations: FUSE requests translated onto InodeFS (inodefs.py) and their answers into pyfuse3's
types. Translation only; the only module raising FUSEError."""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from . import acl
from .attrs import AttrChange
from .errorlog import IoErrors
from .handles import direct_write
from .idmap import IdMap
from .inodefs import InodeFS
from .inodes import ROOT_INODE
from .listing import Listing
from .permissions import EXEC, READ, WRITE
from .tree import Node
from .union import UnionFS

log = logging.getLogger("unionfs")

#: a listed child: its node, its inode number and the attributes readdirplus hands the kernel
Entry = tuple[Node, int, pyfuse3.EntryAttributes]

P = ParamSpec("P")
R = TypeVar("R")


def translate(func: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Let only FUSEError leave a handler: OSError keeps its errno, anything else is a bug answered EIO (and
    recorded: errorlog.py). What a request changed, the core said itself (caches.py)."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        ops = args[0]
        assert isinstance(ops, UnionOperations)
        try:
            result = await func(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s%r -> %s", func.__name__, args[1:], errno.errorcode.get(exc.errno or 0, exc.errno))
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception as exc:  # noqa: BLE001 (the FUSE edge: a bug is recorded and answered EIO, never kills the mount)
            ops.io_errors.record(func.__name__, args[1:], exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            ops.fs.end_request()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s%r -> ok", func.__name__, args[1:])
        return result

    return wrapper


class UnionOperations(pyfuse3.Operations):
    enable_writeback_cache = False
    # The umask is ours to apply (FUSE_CAP_DONT_MASK, with the patched pyfuse3): a default ACL replaces it
    # (union.py). Stock, the kernel has applied it already, and applying it again changes nothing.
    apply_umask = True

    def __init__(
        self,
        fs: UnionFS,
        timeout: float,
        ids: IdMap | None = None,
        check_others: bool = False,
        io_errors: IoErrors | None = None,
    ) -> None:
        super().__init__()
        self.fs = fs
        # how long the kernel may trust entries, attributes and failed lookups: every change passes through it
        self.timeout = timeout
        self.ids = ids or IdMap()
        self.sync_files = True  # fsync=0: fsync(2) and fdatasync(2) on the mount sync nothing (see fsync)
        self.io_errors = io_errors or IoErrors()
        self.ifs: InodeFS[Listing[Entry]] = InodeFS(fs, self.ids, check_others, pyfuse3.get_sup_groups)
        self.inodes = self.ifs.inodes
        # With a pyfuse3 that names the directory in readdir() when there is no opendir, answering opendir
        # ENOSYS makes the kernel cache listings itself (FOPEN_CACHE_DIR) and stop sending opendir and
        # releasedir. Not for other users of an unprivileged mount: opendir is where we check them.
        self.no_opendir = not check_others and getattr(pyfuse3, "READDIR_INODE_WITHOUT_OPENDIR", False)

    # -- answers -----------------------------------------------------------------------------------------------

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
        """An entry handed to the kernel: one lookup counted."""
        nodeid = self.inodes.nodeid(node)
        attr = self._attrs(node.st, nodeid, node)
        self.inodes.remember(nodeid, parent, node.name)
        return attr

    def _listing(self, inode: int, node: Node) -> Listing[Entry]:
        """A directory's merged entries with their numbers and attributes, built once per upper state."""

        def build() -> Listing[Entry]:
            entries: list[Entry] = []
            for child in self.fs.children(node):
                nodeid = self.inodes.nodeid(child)
                entries.append((child, nodeid, self._attrs(child.st, nodeid, child)))
            return Listing(entries, lambda entry: entry[0].name)

        return self.ifs.cache.listing(inode, build)

    def _file_info(self, fh: int, flags: int, node: Node, new: bool = False) -> pyfuse3.FileInfo:
        """Data cached across opens (keep_cache); direct I/O for write-only handles where safe (handles.py).
        `new`: a file the request just created."""
        direct = direct_write(flags) and not self.fs.strips_on_write(node, new)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=direct)

    # -- reading -----------------------------------------------------------------------------------------------

    @translate
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        node = self.ifs.lookup(parent_inode, os.fsdecode(name), ctx)
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
        st, node = self.ifs.stat(inode)
        return self._attrs(st, inode, node)

    @translate
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return os.fsencode(self.fs.readlink(self.ifs.node(inode)))

    @translate
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        fh, node = await self.ifs.open(inode, flags, ctx)
        return self._file_info(fh, flags, node)

    @translate
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(self.read_fd(fh), size, off)

    def read_fd(self, fh: int) -> int:
        """The file a READ of `fh` reads from: the patched pyfuse3 has libfuse splice the data from it into the
        reply, without a copy in the daemon (`scripts/patch_pyfuse3.py`); a stock one calls read() above. A
        handle on a lower file follows it to the upper copy once it is copied up (handles.py)."""
        fd = self.ifs.handles.files[fh].fd
        if log.isEnabledFor(logging.DEBUG):
            log.debug("read_fd(%d,) -> %d", fh, fd)
        return fd

    @translate
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return os.pwrite(self.write_fd(fh), buf, off)

    def write_fd(self, fh: int) -> int:
        """The upper file a WRITE to `fh` lands in: the patched pyfuse3 has libfuse write the data there without
        handing it to Python (`scripts/patch_pyfuse3.py`); a stock one calls write() above."""
        handle = self.ifs.handles.files[fh]
        if handle.drops_setgid:  # the first write of someone outside its group clears setgid
            with contextlib.suppress(OSError):  # (the write goes on regardless)
                if self.ifs.written(fh):
                    pyfuse3.invalidate_inode(handle.nodeid, attr_only=True)
        self.ifs.cache.written(handle.nodeid)  # its size and times are stale now, where cached
        if log.isEnabledFor(logging.DEBUG):
            log.debug("write_fd(%d,) -> %d", fh, handle.fd)
        return handle.fd

    @translate
    async def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        """Called by a pyfuse3 with the fallocate patch (`scripts/patch_pyfuse3.py`); a stock one answers ENOSYS,
        which the kernel turns into EOPNOTSUPP. The kernel sends it only for handles open for writing, whose files
        are upper files; it passes on only KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE (COLLAPSE_RANGE and INSERT_RANGE
        it refuses itself), then drops the attributes it cached."""
        self.ifs.fallocate(fh, mode, offset, length)

    @translate
    async def flush(self, fh: int) -> None:
        # Nothing to do at close(2): saying so once (ENOSYS) stops the kernel sending FLUSH for every close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @translate
    async def release(self, fh: int) -> None:
        self.ifs.handles.release(fh)

    @translate
    async def fsync(self, fh: int, datasync: bool) -> None:
        # fsync=0: ENOSYS, once; the kernel then answers every fsync(2) and fdatasync(2) itself, with success.
        if not self.sync_files:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        fd = self.ifs.handles.files[fh].fd
        if datasync:
            os.fdatasync(fd)
        else:
            os.fsync(fd)

    @translate
    async def opendir(self, inode: int, ctx: Any) -> int:
        if self.no_opendir:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        node = self.ifs.node(inode)
        self.ifs.checks.require(ctx, node, READ)
        return self.ifs.handles.open_dir(inode, node, self._listing(inode, node))

    @translate
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        if self.no_opendir:  # `fh` is the directory's inode
            inode = fh
            node = self.ifs.node(inode)
            listing = self._listing(inode, node)
        else:
            inode, node, listing = self.ifs.handles.dirs[fh]
        if start_id == 0:  # "." and "..", as a local filesystem lists them (no lookup count for them)
            if not pyfuse3.readdir_reply(token, b".", self._attrs(node.st, inode, node), 1):
                return
            start_id = 1
        if start_id == 1:
            parent = self.fs.resolve(self.inodes.path(inode)[:-1])
            if not pyfuse3.readdir_reply(token, b"..", self._attrs(parent.st, self.inodes.nodeid(parent), parent), 2):
                return
            start_id = 2
        entries, cookies = listing.entries, listing.cookies
        for index in range(listing.after(start_id), len(entries)):
            child, nodeid, attr = entries[index]
            if not pyfuse3.readdir_reply(token, os.fsencode(child.name), attr, cookies[index]):
                return
            self.inodes.remember(nodeid, inode, child.name)

    @translate
    async def releasedir(self, fh: int) -> None:
        del self.ifs.handles.dirs[fh]

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
        self.ifs.checks.require(ctx, self.ifs.node(inode), mode & (READ | WRITE | EXEC))
        return True

    @translate
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        return self.ifs.getxattr(inode, os.fsdecode(name))

    @translate
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return [os.fsencode(n) for n in self.fs.listxattr(self.ifs.node(inode, attrs=False))]

    # -- writing -----------------------------------------------------------------------------------------------

    @translate
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        await self.ifs.setxattr(inode, os.fsdecode(name), value, ctx)
        self._mode_changed(inode, name)

    @translate
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        await self.ifs.removexattr(inode, os.fsdecode(name), ctx)
        self._mode_changed(inode, name)

    def _mode_changed(self, inode: int, name: bytes) -> None:
        """An ACL set the mode: the kernel, which asked for an xattr and not for a chmod, must forget the
        attributes it holds (without FUSE_POSIX_ACL it forgets only the change time)."""
        if os.fsdecode(name) not in acl.NAMES:
            return
        with contextlib.suppress(OSError):  # (the kernel no longer knows the inode: nothing is cached)
            pyfuse3.invalidate_inode(inode, attr_only=True)

    @translate
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        change = AttrChange(
            mode=attr.st_mode if fields.update_mode else None,
            uid=self.ids.store_uid(attr.st_uid) if fields.update_uid else None,
            gid=self.ids.store_gid(attr.st_gid) if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        st, node = await self.ifs.setattr(inode, change, fh, ctx)
        return self._attrs(st, inode, node)

    @translate
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        owner = self.ifs.owner(ctx, ctx.umask)
        fh, node = await self.ifs.create(parent_inode, os.fsdecode(name), mode, flags, owner, ctx)
        attr = self._entry(node, parent_inode)
        return self._file_info(fh, flags, node, new=True), attr

    @translate
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        parent, child = await self.ifs.new_parent(parent_inode, os.fsdecode(name), ctx)
        return self._entry(self.fs.mkdir(parent, child, mode, self.ifs.owner(ctx, ctx.umask)), parent_inode)

    @translate
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> pyfuse3.EntryAttributes:
        parent, child = await self.ifs.new_parent(parent_inode, os.fsdecode(name), ctx)
        return self._entry(self.fs.mknod(parent, child, mode, rdev, self.ifs.owner(ctx, ctx.umask)), parent_inode)

    @translate
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        parent, child = await self.ifs.new_parent(parent_inode, os.fsdecode(name), ctx)
        node = self.fs.symlink(parent, child, os.fsdecode(target), self.ifs.owner(ctx, ctx.umask))
        return self._entry(node, parent_inode)

    @translate
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        node = await self.ifs.link(inode, new_parent_inode, os.fsdecode(new_name), ctx)
        return self._entry(node, new_parent_inode)

    @translate
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.ifs.remove(parent_inode, os.fsdecode(name), False, ctx)

    @translate
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.ifs.remove(parent_inode, os.fsdecode(name), True, ctx)

    @translate
    async def rename(
        self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes, flags: int, ctx: Any
    ) -> None:
        old, new = os.fsdecode(name_old), os.fsdecode(name_new)
        await self.ifs.rename(parent_inode_old, old, parent_inode_new, new, flags, ctx)


__all__ = ["ROOT_INODE", "UnionOperations"]
