"""The upper layer's writer: copy-up (parents first), whiteouts, opaque markers, placing new entries.

Every new upper entry is built under the work dir (same filesystem as the upper) and renamed into place, so
a crash leaves the old state or the new one, never half a file. Directories are copied up parents first, each
with its own metadata. Data copying is datacopy.py's; copying whole trees, treecopy.py's.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from typing import Literal

from .datacopy import StagedCopy, copy_and_keep_times, copy_data, own, put_xattrs
from .layers import EntryReader, Layer, Path, lstat_at, proc_path, read_override
from .ownership import OverrideStat
from .syscalls import RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT, renameat2
from .tree import Node, Tree
from .whiteout import (
    OPAQUE_MARKER,
    OVERRIDE_STAT,
    TRUSTED_METACOPY,
    TRUSTED_OPAQUE,
    USER_METACOPY,
    WhiteoutForm,
    is_chardev_whiteout,
    whiteout_name,
)
from .workdir import WORK_SUBDIR

Content = Literal["full", "empty", "meta"]
#: How many upper inodes Layer.plain holds at most (emptied when full).
PLAIN_INODES = 1 << 20

#: Called as alias(new_upper_st, node) when `node` of the merged view now lives at a new upper inode.
AliasHook = Callable[[os.stat_result, Node], None]
#: Called with the stat of every entry created afresh in the upper (its inode number may be a reused one).
FreshHook = Callable[[os.stat_result], None]


class Upper:
    """The writable top layer and its work dir."""

    def __init__(
        self,
        tree: Tree,
        work_path: str,
        form: WhiteoutForm,
        opaque_xattr: str,
        fsync: bool,
        metacopy: bool = False,
        privileged: bool = True,
    ) -> None:
        self.tree = tree
        layer = tree.layers[0]
        assert isinstance(layer, Layer) and layer.writable  # (the upper is a local directory)
        self.layer = layer
        self.form = form
        self.opaque_xattr = opaque_xattr
        self.fsync = fsync
        self.metacopy = metacopy
        self.privileged = privileged  # may chown to any id and mknod devices; else ownership is recorded
        self.rename_whiteout = True  # until the kernel says RENAME_WHITEOUT is not for us
        self.metacopy_xattr = TRUSTED_METACOPY if opaque_xattr == TRUSTED_OPAQUE else USER_METACOPY
        self.work_fd = os.open(os.path.join(work_path, WORK_SUBDIR), os.O_RDONLY | os.O_DIRECTORY)
        self._names = itertools.count()
        self._pid = os.getpid()
        self.alias: AliasHook = lambda _st, _node: None
        self.fresh: FreshHook = lambda _st: None

    def close(self) -> None:
        os.close(self.work_fd)

    # -- small helpers ---------------------------------------------------------------------------------------

    def tmpname(self) -> str:
        return f"#{self._pid}.{next(self._names)}"

    @contextlib.contextmanager
    def staging(self, tmp: str) -> Iterator[None]:
        """Build work-dir entry `tmp`; if building fails (ENOSPC, say), remove what was built."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(OSError):
                self.discard(tmp)
            raise

    def dirfd(self, path: Path) -> int:
        return self.layer.dirfd(path)

    def disk_mode(self, mode: int) -> int:
        """The permission bits to put on disk: the real ones, or with the owner's bits forced on when the
        daemon cannot otherwise keep working on entries whose real mode is only recorded."""
        bits = stat.S_IMODE(mode)
        if not self.privileged:
            bits |= 0o700 if stat.S_ISDIR(mode) else 0o600
        return bits

    def record_owner(self, dirfd: int, name: str, effective: os.stat_result) -> None:
        """Keep the owner, mode and type the user should see in the override_stat xattr."""
        if stat.S_ISLNK(effective.st_mode) or stat.S_ISFIFO(effective.st_mode) or stat.S_ISSOCK(effective.st_mode):
            return  # Linux keeps user.* xattrs off these: they show the daemon's owner (devices are placeholders)
        record = OverrideStat(effective.st_uid, effective.st_gid, effective.st_mode, effective.st_rdev).encode()
        if self.layer.plain:  # (`effective` may be the stat of what it copies: the inode is asked)
            own_st = os.stat(name, dir_fd=dirfd, follow_symlinks=False) if name else os.fstat(dirfd)
            self.layer.plain.discard(own_st.st_ino)
        if name:
            os.setxattr(proc_path(dirfd, name), OVERRIDE_STAT, record, follow_symlinks=False)
        else:
            os.setxattr(dirfd, OVERRIDE_STAT, record)  # the directory itself (the mount's root)

    def set_owner_mode(
        self, dirfd: int, name: str, effective: os.stat_result, current: os.stat_result | None = None
    ) -> None:
        """Make dirfd/name show `effective`'s owner and mode: for real where we may, else by record. `current`:
        the entry's own lstat, when the caller has just made it and knows it carries no ownership record (nor
        anything else since that lstat): it spares the calls that would find out again."""
        where: str | int = proc_path(dirfd, name) if name else dirfd  # no name: dirfd itself (the root)
        if self.privileged:
            if current is None:
                own(where, effective.st_uid, effective.st_gid, follow_symlinks=not name)
            elif (current.st_uid, current.st_gid) != (effective.st_uid, effective.st_gid):
                os.chown(where, effective.st_uid, effective.st_gid, follow_symlinks=not name)
                current = None  # (a chown may have dropped setuid and setgid: the mode is set whatever it was)
        if not stat.S_ISLNK(effective.st_mode):
            mode = self.disk_mode(effective.st_mode)
            if current is None or stat.S_IMODE(current.st_mode) != mode:
                os.chmod(where, mode)
        if not self.privileged or (current is None and read_override(dirfd, name or None) is not None):
            self.record_owner(dirfd, name, effective)

    def set_meta(self, dirfd: int, name: str, st: os.stat_result, xattrs: dict[str, bytes] | None) -> None:
        """Give dirfd/name, an entry just made (as a copy of one with `st`), the owner, mode and times of `st` and
        the `xattrs` of its source (read_xattrs)."""
        current: os.stat_result | None = None
        ino: int | None = None
        if xattrs is not None:
            where = proc_path(dirfd, name)
            if self.privileged:  # owned first: a chown after the xattrs would drop a file capability among them
                current = os.stat(where, follow_symlinks=False)
                ino = current.st_ino
                self.layer.plain.discard(ino)  # (a number reused: this inode is not the one it named)
                if (current.st_uid, current.st_gid) != (st.st_uid, st.st_gid):
                    os.chown(where, st.st_uid, st.st_gid, follow_symlinks=False)
                    current = None
            if xattrs:
                put_xattrs(xattrs, where, records=not self.privileged)
                current = None  # (an ACL among them sets the mode; a record, the owner shown)
        self.set_owner_mode(dirfd, name, st, current)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dirfd, follow_symlinks=False)
        if ino is not None and OVERRIDE_STAT not in (xattrs or {}):
            self.made_plain(ino)

    def made_plain(self, ino: int) -> None:
        """Upper inode `ino`, just made by the privileged writer, carries no ownership record (Layer.plain)."""
        plain = self.layer.plain
        if len(plain) >= PLAIN_INODES:
            plain.clear()
        plain.add(ino)

    def _sync(self, fd: int) -> None:
        if self.fsync:
            os.fsync(fd)

    # -- copy-up -----------------------------------------------------------------------------------------------

    def ensure_dir(self, node: Node) -> int:
        """Make directory `node` exist in the upper (parents first); return its borrowed upper fd."""
        if node.layers and node.layers[0] == 0:
            return self.dirfd(node.path)
        try:  # `node` may predate a copy-up (of a child) that already brought this directory up
            return self.dirfd(node.path)
        except (FileNotFoundError, NotADirectoryError):
            pass
        parent = self.tree.resolve(node.path[:-1])
        if parent is None:
            raise OSError(errno.ENOENT, "parent vanished")
        parent_fd = self.ensure_dir(parent)
        tmp = self.tmpname()
        with self.staging(tmp):
            os.mkdir(tmp, 0o700, dir_fd=self.work_fd)
            self.set_meta(self.work_fd, tmp, node.st, self.tree.layers[node.layer].xattrs(node.path))
            renameat2(self.work_fd, tmp, parent_fd, node.name, RENAME_NOREPLACE)
        self.tree.reshaped()
        self.alias(os.stat(node.name, dir_fd=parent_fd, follow_symlinks=False), node)
        return self.dirfd(node.path)

    def copy_nondir(
        self,
        node: Node,
        dst_dir: int,
        dst_name: str,
        content: Content,
        filled: bool = False,
        src: EntryReader | None = None,
    ) -> None:
        """Build a copy of non-directory `node` at dst_dir/dst_name (a fresh name; `filled`: a regular file
        already there with all its data). `content` says what of a regular file's data: all of it, none (it is
        about to be truncated), or none yet (metacopy). `src`: the directory holding `node` in its layer,
        where the caller has one of its own (OpenDir); else its layer."""
        path: Path = node.path
        if src is None:
            src = self.tree.layers[node.layer]
        else:
            path = (node.name,)
        st = node.st
        if stat.S_ISREG(st.st_mode):
            if not filled:
                self._copy_regular(node, src, path, dst_dir, dst_name, content)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(src.readlink(path), dst_name, dir_fd=dst_dir)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            self.make_device(dst_dir, dst_name, st.st_mode, st.st_rdev)
        else:
            os.mknod(dst_name, st.st_mode, st.st_rdev, dir_fd=dst_dir)
        self.set_meta(dst_dir, dst_name, st, src.xattrs(path))
        if content == "meta" and stat.S_ISREG(st.st_mode):
            os.setxattr(proc_path(dst_dir, dst_name), self.metacopy_xattr, b"", follow_symlinks=False)

    def open_data(self, node: Node) -> int:
        """A read-only fd of regular file `node` in its layer."""
        return self.tree.layers[node.layer].open_file(node.path)

    def source_below(self, node: Node) -> Node | None:
        """The file below an upper file `node` in the merged view: where a metadata-only copy-up's data lies."""
        parent = self.tree.resolve(node.path[:-1])
        return self.tree.lookup(parent, node.name, below_upper=True) if parent is not None else None

    def _copy_regular(
        self, node: Node, src: EntryReader, path: Path, dst_dir: int, dst_name: str, content: Content
    ) -> None:
        # made with the permission bits it ends with, where the daemon's umask lets it: set_meta's chmod is spared
        bits = self.disk_mode(node.st.st_mode) & 0o777
        fd = os.open(dst_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, bits, dir_fd=dst_dir)
        try:
            if content == "meta":
                os.ftruncate(fd, node.st.st_size)
            elif content == "full":
                data = src.open_file(path)
                try:
                    copy_data(data, fd, node.st.st_size)
                finally:
                    os.close(data)
            self._sync(fd)
        finally:
            os.close(fd)

    def make_device(self, dirfd: int, name: str, mode: int, rdev: int) -> None:
        """A device node, or without the privilege to make one an empty placeholder file whose record (set by
        the caller) says which device it is."""
        if self.privileged:
            os.mknod(name, mode, rdev, dir_fd=dirfd)
        else:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dirfd))

    def stage(self, node: Node) -> StagedCopy:
        """Begin copying up lower regular file `node`: its data is copied by StagedCopy.run, then copy_up."""
        src = self.open_data(node)
        tmp = self.tmpname()
        try:
            dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=self.work_fd)
        except BaseException:
            os.close(src)
            raise
        return StagedCopy(node.layer, node.st.st_ino, tmp, src, dst, self.fsync)

    def stage_fill(self, node: Node, source: Node) -> StagedCopy:
        """Begin filling metadata-only upper file `node` with the data of `source`, the lower file below it: in
        place, by StagedCopy.run, then fill_data."""
        src = self.open_data(source)
        try:
            dst = os.open(node.name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dirfd(node.path[:-1]))
        except BaseException:
            os.close(src)
            raise
        return StagedCopy(0, node.st.st_ino, None, src, dst, self.fsync)

    def unstage(self, staged: StagedCopy) -> None:
        """Close a staged copy's fds and remove its work-dir file unless copy_up has put it in place."""
        os.close(staged.src)
        os.close(staged.dst)
        if staged.tmp is not None:
            self.discard(staged.tmp)

    def content(self, node: Node, content: Content) -> Content:
        """What of a regular file's data copying `node` up for `content` copies: metadata only where metacopy
        is on and there is data to leave below, else all of it."""
        if content == "meta" and not (self.metacopy and stat.S_ISREG(node.st.st_mode) and node.st.st_size):
            return "full"
        return content

    def copy_up(self, node: Node, content: Content = "full", staged: StagedCopy | None = None) -> None:
        """Bring `node` into the upper at its own path with its metadata and (see _copy_nondir) its data;
        `staged`: the copy of its whole data (StagedCopy.matches(node)), to use rather than copying it."""
        content = self.content(node, content)
        if node.layer == 0:
            if node.meta_only and content != "meta":
                self.fill_data(node, content == "full", staged)
            return
        if node.is_dir:
            self.ensure_dir(node)
            return
        parent = self.tree.resolve(node.path[:-1])
        if parent is None:
            raise OSError(errno.ENOENT, "parent vanished")
        parent_fd = self.ensure_dir(parent)
        filled = staged is not None and staged.tmp is not None
        tmp = staged.tmp if staged is not None and staged.tmp is not None else self.tmpname()
        with self.staging(tmp):
            self.copy_nondir(node, self.work_fd, tmp, content, filled=filled)
            renameat2(self.work_fd, tmp, parent_fd, node.name, RENAME_NOREPLACE)
        self.alias(os.stat(node.name, dir_fd=parent_fd, follow_symlinks=False), node)
        if node.st.st_nlink > 1:
            self._link_up(node)

    def _link_up(self, node: Node) -> None:
        """Give every other visible name of a multiply-linked lower inode the new upper inode too, so the names
        keep sharing one file (and still do after a remount, in any overlay implementation)."""
        layer = self.tree.layers[node.layer]
        for path in layer.hard_links(node.st.st_ino):
            if path == node.path:
                continue
            other = self.tree.resolve(path)
            if other is None or other.layer != node.layer or other.st.st_ino != node.st.st_ino:
                continue  # hidden, or shadowed by another file: not a name of this file in the merged view
            parent = self.tree.resolve(path[:-1])
            if parent is None:
                continue
            parent_fd = self.ensure_dir(parent)
            os.link(
                node.name,
                other.name,
                src_dir_fd=self.dirfd(node.path[:-1]),
                dst_dir_fd=parent_fd,
                follow_symlinks=False,
            )

    def fill_data(self, node: Node, data: bool = True, staged: StagedCopy | None = None) -> None:
        """Finish a metadata-only copy-up in place: the data first, the marker last, so a crash in between leaves
        a file still read from below. In place keeps the inode, and with it every hard link to it. The data
        copied is what the file already showed, so its times stay; `staged`: the data is in already."""
        upper_dir = self.dirfd(node.path[:-1])
        fd = os.open(node.name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=upper_dir)
        try:
            if staged is None:
                self._fill(node, fd, data)
            for attr in (TRUSTED_METACOPY, USER_METACOPY):
                with contextlib.suppress(OSError):
                    os.removexattr(fd, attr)
        finally:
            os.close(fd)
        self.alias(os.stat(node.name, dir_fd=upper_dir, follow_symlinks=False), node)

    def _fill(self, node: Node, fd: int, data: bool) -> None:
        source = self.source_below(node) if data else None
        if source is None:
            os.ftruncate(fd, 0)
        else:
            src = self.open_data(source)
            try:
                copy_and_keep_times(src, fd)
            finally:
                os.close(src)
        self._sync(fd)

    # -- whiteouts and opaque markers -------------------------------------------------------------------------

    def reshaped(self) -> None:
        """The upper's directory tree changed shape: cached directory fds and nodes are stale."""
        self.layer.flush()
        self.tree.reshaped()

    def make_whiteout(self, dirfd: int, name: str) -> None:
        """Hide `name` of the layers below; whatever non-directory the upper has at `name` is replaced."""
        if self.form is WhiteoutForm.CHARDEV:
            tmp = self.tmpname()
            os.mknod(tmp, stat.S_IFCHR, 0, dir_fd=self.work_fd)
            os.rename(tmp, name, src_dir_fd=self.work_fd, dst_dir_fd=dirfd)
            return
        self._whiteout_file(dirfd, name)
        if lstat_at(dirfd, name) is not None:
            os.unlink(name, dir_fd=dirfd)

    def _whiteout_file(self, dirfd: int, name: str) -> None:
        """A `.wh.NAME` file. Until NAME itself goes, NAME still shows: a same-layer entry wins."""
        if len(os.fsencode(whiteout_name(name))) > 255:
            raise OSError(errno.ENAMETOOLONG, "no room for a .wh. whiteout of this name: use whiteout=chardev")
        tmp = self.tmpname()
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=self.work_fd))
        os.rename(tmp, whiteout_name(name), src_dir_fd=self.work_fd, dst_dir_fd=dirfd)

    def move(self, old_fd: int, old: str, new_fd: int, new: str, is_dir: bool, whiteout: bool) -> None:
        """Rename upper entry old -> new, replacing what the upper has at new (a whiteout, an empty merged
        directory, a file), and leave a whiteout at old when the layers below have it: in one step where the
        kernel can (RENAME_WHITEOUT), so a crash never leaves both names or neither."""
        existing = lstat_at(new_fd, new)
        if existing is not None and (is_dir or stat.S_ISDIR(existing.st_mode)):
            renameat2(old_fd, old, new_fd, new, RENAME_EXCHANGE)
            self.reshaped()
            displaced = os.stat(old, dir_fd=old_fd, follow_symlinks=False)
            if not (whiteout and is_chardev_whiteout(displaced.st_mode, displaced.st_rdev)):
                self.remove_entry(old_fd, old, whiteout)
        elif whiteout and self.form is WhiteoutForm.CHARDEV and self.rename_whiteout:
            try:
                renameat2(old_fd, old, new_fd, new, RENAME_WHITEOUT)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EPERM, errno.EOPNOTSUPP):
                    raise
                self.rename_whiteout = False  # this filesystem or this process cannot: two steps from now on
                os.rename(old, new, src_dir_fd=old_fd, dst_dir_fd=new_fd)
                self.make_whiteout(old_fd, old)
            if is_dir:
                self.reshaped()
        elif whiteout and self.form is WhiteoutForm.FILE:
            self._whiteout_file(old_fd, old)
            os.rename(old, new, src_dir_fd=old_fd, dst_dir_fd=new_fd)
        else:
            os.rename(old, new, src_dir_fd=old_fd, dst_dir_fd=new_fd)
            if whiteout:
                self.make_whiteout(old_fd, old)
        if is_dir:
            self.reshaped()
        if lstat_at(new_fd, whiteout_name(new)) is not None:
            os.unlink(whiteout_name(new), dir_fd=new_fd)

    def make_opaque(self, dirfd: int, name: str) -> None:
        self.tree.reshaped()
        if self.form is WhiteoutForm.CHARDEV:
            os.setxattr(proc_path(dirfd, name), self.opaque_xattr, b"y", follow_symlinks=False)
        else:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            try:
                os.close(os.open(OPAQUE_MARKER, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=fd))
            finally:
                os.close(fd)

    def remove_entry(self, dirfd: int, name: str, whiteout: bool) -> None:
        """Take upper entry dirfd/name (a directory: its merged content already gone or moved) out of the
        view in one step, leaving a whiteout when the layers below have the name."""
        if whiteout and self.form is WhiteoutForm.CHARDEV:
            tmp = self.tmpname()
            os.mknod(tmp, stat.S_IFCHR, 0, dir_fd=self.work_fd)
            renameat2(self.work_fd, tmp, dirfd, name, RENAME_EXCHANGE)
        else:
            if whiteout:
                tmp = self.tmpname()
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=self.work_fd))
                os.rename(tmp, whiteout_name(name), src_dir_fd=self.work_fd, dst_dir_fd=dirfd)
            tmp = self.tmpname()
            os.rename(name, tmp, src_dir_fd=dirfd, dst_dir_fd=self.work_fd)
        self.reshaped()
        self.discard(tmp)

    def discard(self, name: str) -> None:
        """Remove work-dir entry `name` (a file or a whole tree)."""
        st = lstat_at(self.work_fd, name)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(proc_path(self.work_fd, name))
        else:
            os.unlink(name, dir_fd=self.work_fd)

    def place(self, src_fd: int, src: str, dirfd: int, name: str, is_dir: bool, free: bool = False) -> bool:
        """Move src_fd/src to dirfd/name, replacing a whiteout or an empty (merged) upper directory there.
        `free`: the caller knows the upper has no directory at `name` (nothing visible is there), so a
        non-directory replaces at most a whiteout and nothing is displaced.

        Returns True when something was displaced: it is then left at src_fd/src for the caller to remove.
        """
        existing = None if free and not is_dir else lstat_at(dirfd, name)
        displaced = existing is not None and (is_dir or stat.S_ISDIR(existing.st_mode))
        if displaced:
            renameat2(src_fd, src, dirfd, name, RENAME_EXCHANGE)
            self.reshaped()
        else:
            os.rename(src, name, src_dir_fd=src_fd, dst_dir_fd=dirfd)
        if lstat_at(dirfd, whiteout_name(name)) is not None:
            os.unlink(whiteout_name(name), dir_fd=dirfd)
        return displaced

    def place_new(self, tmp: str, dirfd: int, name: str, is_dir: bool, free: bool = False) -> None:
        """Move work-dir entry `tmp` into place; whatever it displaces is removed (`free`: see place)."""
        if self.place(self.work_fd, tmp, dirfd, name, is_dir, free):
            self.discard(tmp)
