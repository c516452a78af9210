"""Everything that writes into the upper layer: copy-up, whiteouts, opaque markers, placing new entries.

Every new upper entry is built under the work dir (same filesystem as the upper) and renamed into place, so
a crash leaves the old state or the new one, never half a file. Directories are copied up parents first, each
with its own metadata.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from .layers import DIR_FLAGS, Layer, Path, lstat_at, read_override
from .ownership import OverrideStat
from .privxattr import is_privileged, record_name, recorded_name, shown_xattrs
from .syscalls import RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT, renameat2
from .tree import Node, Tree
from .whiteout import (
    OPAQUE_MARKER,
    OPAQUE_XATTRS,
    OVERRIDE_STAT,
    TRUSTED_METACOPY,
    TRUSTED_OPAQUE,
    USER_METACOPY,
    USER_OPAQUE,
    WhiteoutForm,
    is_chardev_whiteout,
    is_internal_xattr,
    whiteout_name,
)

WORK_SUBDIR = "unionfs"
Content = Literal["full", "empty", "meta"]
COPY_CHUNK = 1 << 30
#: Regular files at least this large have their data copied up by a worker thread (see StagedCopy).
THREADED_COPY_MIN = 4 << 20

#: Called as alias(new_upper_st, node) when `node` of the merged view now lives at a new upper inode.
AliasHook = Callable[[os.stat_result, Node], None]
#: Called with the stat of every entry created afresh in the upper (its inode number may be a reused one).
FreshHook = Callable[[os.stat_result], None]


def proc_path(dirfd: int, name: str | None = None) -> str:
    """A path naming `name` inside an open directory without walking the layer from its root again."""
    return f"/proc/self/fd/{dirfd}" if name is None else f"/proc/self/fd/{dirfd}/{name}"


def copy_xattrs(src: str, dst: str, *, records: bool = False) -> None:
    """Copy the xattrs a user set (and ownership records) from src to dst; union-internal ones stay behind.
    Privileged ones (`security.*`, `trusted.*`) go over as they show at src (privxattr.py): as records when
    `records` (dst's writer may not set them), else under their own names."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    found = {
        name: os.getxattr(src, name, follow_symlinks=False)
        for name in names
        if not is_internal_xattr(name) or name == OVERRIDE_STAT or recorded_name(name) is not None
    }
    for name, value in shown_xattrs(found).items():
        if is_internal_xattr(name) and name != OVERRIDE_STAT:
            continue  # a record of union bookkeeping
        target = record_name(name) if records and is_privileged(name) else name
        try:
            os.setxattr(dst, target, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EACCES):
                raise


def own(where: str | int, uid: int, gid: int, *, follow_symlinks: bool) -> None:
    """chown, only where the owner differs: any chown drops a file's capability (security.capability), as the
    kernel does it, and a chmod or a copy-up must keep it. (A user's chown through the mount drops it all the
    same: the kernel removes it before it asks for the change.)"""
    st = os.stat(where, follow_symlinks=follow_symlinks)
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(where, uid, gid, follow_symlinks=follow_symlinks)


def copy_data(src_fd: int, dst_fd: int) -> None:
    while True:
        try:
            if os.copy_file_range(src_fd, dst_fd, COPY_CHUNK) == 0:
                return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            break
    while chunk := os.read(src_fd, 1 << 20):
        os.write(dst_fd, chunk)


def copy_and_keep_times(src_fd: int, dst_fd: int) -> None:
    """Copy data into a file that shows it already (a metadata-only copy-up): nothing visible changes, nor may
    its times."""
    st = os.fstat(dst_fd)
    copy_data(src_fd, dst_fd)
    os.utime(dst_fd, ns=(st.st_atime_ns, st.st_mtime_ns))


@dataclass(slots=True)
class StagedCopy:
    """The data of a lower file, copied by `run` (in a worker thread: it touches only its own two fds) while
    requests go on. Either into a work-dir file, which Upper.copy_up then gives metadata and puts in place; or
    (`tmp` None) into the upper file of a metadata-only copy-up, in place, which Upper.fill_data then marks
    whole."""

    layer: int  # the file copied up: a lower one (layers below do not change while mounted, so layer and
    ino: int  # inode name its data), or for a fill layer 0 and the upper inode
    tmp: str | None
    src: int
    dst: int
    fsync: bool

    def run(self) -> None:
        if self.tmp is None:
            copy_and_keep_times(self.src, self.dst)
        else:
            copy_data(self.src, self.dst)
        if self.fsync:
            os.fsync(self.dst)

    def matches(self, node: Node) -> bool:
        same = node.layer == self.layer and node.st.st_ino == self.ino and stat.S_ISREG(node.st.st_mode)
        return same and (self.tmp is not None or node.meta_only)


@dataclass(slots=True)
class TreePlan:
    """A merged directory to copy whole, with its merged children as they were listed: directories as plans of
    their own, files (upper ones, whole: no metadata-only ones) as nodes."""

    node: Node
    children: list[TreePlan | Node]


class TreePlanner:
    """Plans the copy of merged directory `node`: its tree as it stands, listed one directory per step so that
    the request loop can serve others in between, and the files in it to copy up before the tree is copied
    (`first`): metadata-only files, whose data must move with them, and lower files with more than one link,
    whose every name must keep sharing one file."""

    def __init__(self, tree: Tree, node: Node) -> None:
        self.tree = tree
        self.plan = TreePlan(node, [])
        self.first: list[Node] = []
        self._todo = [self.plan]

    def step(self) -> bool:
        """List one more directory; False once the whole tree is planned."""
        if not self._todo:
            return False
        plan = self._todo.pop()
        for child in self.tree.children(plan.node):
            if child.is_dir:
                below = TreePlan(child, [])
                plan.children.append(below)
                self._todo.append(below)
                continue
            if child.meta_only or (child.layer != 0 and child.st.st_nlink > 1):
                self.first.append(child)
            plan.children.append(child)
        return True

    def run(self) -> TreePlanner:
        while self.step():
            pass
        return self


@dataclass(slots=True)
class BuiltTree:
    """A copy of a planned tree under the work dir (`tmp`), and what Upper.alias must hear about its entries."""

    tmp: str
    aliases: list[tuple[os.stat_result, Node]]


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
        self.layer: Layer = tree.layers[0]
        self.form = form
        self.opaque_xattr = opaque_xattr
        self.fsync = fsync
        self.metacopy = metacopy
        self.privileged = privileged  # may chown to any id and mknod devices; else ownership is recorded
        self.rename_whiteout = True  # until the kernel says RENAME_WHITEOUT is not for us
        self.metacopy_xattr = TRUSTED_METACOPY if opaque_xattr == TRUSTED_OPAQUE else USER_METACOPY
        self.work_fd = os.open(os.path.join(work_path, WORK_SUBDIR), os.O_RDONLY | os.O_DIRECTORY)
        self._names = itertools.count()
        self.alias: AliasHook = lambda st, node: None
        self.fresh: FreshHook = lambda st: None

    def close(self) -> None:
        os.close(self.work_fd)

    # -- small helpers ---------------------------------------------------------------------------------------

    def tmpname(self) -> str:
        return f"#{os.getpid()}.{next(self._names)}"

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
        if name:
            os.setxattr(proc_path(dirfd, name), OVERRIDE_STAT, record, follow_symlinks=False)
        else:
            os.setxattr(dirfd, OVERRIDE_STAT, record)  # the directory itself (the mount's root)

    def set_owner_mode(self, dirfd: int, name: str, effective: os.stat_result) -> None:
        """Make dirfd/name show `effective`'s owner and mode: for real where we may, else by record."""
        where: str | int = proc_path(dirfd, name) if name else dirfd  # no name: dirfd itself (the root)
        if self.privileged:
            own(where, effective.st_uid, effective.st_gid, follow_symlinks=not name)
        if not stat.S_ISLNK(effective.st_mode):
            os.chmod(where, self.disk_mode(effective.st_mode))
        if not self.privileged or read_override(dirfd, name or None) is not None:
            self.record_owner(dirfd, name, effective)

    def _set_meta(self, dirfd: int, name: str, st: os.stat_result, src: str | None) -> None:
        """Give dirfd/name the owner, mode, xattrs and times of `st` (read from `src`)."""
        if src is not None:
            if self.privileged:  # owned first: a chown after the xattrs would drop a file capability among them
                own(proc_path(dirfd, name), st.st_uid, st.st_gid, follow_symlinks=False)
            copy_xattrs(src, proc_path(dirfd, name), records=not self.privileged)
        self.set_owner_mode(dirfd, name, st)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dirfd, follow_symlinks=False)

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
        src_dir = self.tree.layers[node.layer].dirfd(node.path[:-1])
        tmp = self.tmpname()
        with self.staging(tmp):
            os.mkdir(tmp, 0o700, dir_fd=self.work_fd)
            self._set_meta(self.work_fd, tmp, node.st, proc_path(src_dir, node.name))
            renameat2(self.work_fd, tmp, parent_fd, node.name, RENAME_NOREPLACE)
        self.tree.reshaped()
        self.alias(os.stat(node.name, dir_fd=parent_fd, follow_symlinks=False), node)
        return self.dirfd(node.path)

    def _copy_nondir(
        self,
        node: Node,
        dst_dir: int,
        dst_name: str,
        content: Content,
        filled: bool = False,
        src_dir: int | None = None,
    ) -> None:
        """Build a copy of non-directory `node` at dst_dir/dst_name (a fresh name; `filled`: a regular file
        already there with all its data). `content` says what of a regular file's data: all of it, none (it is
        about to be truncated), or none yet (metacopy). `src_dir`: an fd of the directory holding `node` in its
        layer, where the caller has one of its own."""
        if src_dir is None:
            src_dir = self.tree.layers[node.layer].dirfd(node.path[:-1])
        st = node.st
        if stat.S_ISREG(st.st_mode):
            if not filled:
                self._copy_regular(node, src_dir, dst_dir, dst_name, content)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(node.name, dir_fd=src_dir), dst_name, dir_fd=dst_dir)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            self.make_device(dst_dir, dst_name, st.st_mode, st.st_rdev)
        else:
            os.mknod(dst_name, st.st_mode, st.st_rdev, dir_fd=dst_dir)
        self._set_meta(dst_dir, dst_name, st, proc_path(src_dir, node.name))
        if content == "meta" and stat.S_ISREG(st.st_mode):
            os.setxattr(proc_path(dst_dir, dst_name), self.metacopy_xattr, b"", follow_symlinks=False)

    def open_data(self, node: Node, src_dir: int | None = None) -> int:
        """A read-only fd of regular file `node` in its layer (`src_dir`: the caller's fd of its directory)."""
        if src_dir is None:
            src_dir = self.tree.layers[node.layer].dirfd(node.path[:-1])
        return os.open(node.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)

    def source_below(self, node: Node) -> Node | None:
        """The file below an upper file `node` in the merged view: where a metadata-only copy-up's data lies."""
        parent = self.tree.resolve(node.path[:-1])
        return self.tree.lookup(parent, node.name, below_upper=True) if parent is not None else None

    def _copy_regular(self, node: Node, src_dir: int, dst_dir: int, dst_name: str, content: Content) -> None:
        fd = os.open(dst_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dst_dir)
        try:
            if content == "meta":
                os.ftruncate(fd, node.st.st_size)
            elif content == "full":
                src = self.open_data(node, src_dir)
                try:
                    copy_data(src, fd)
                finally:
                    os.close(src)
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
            self._copy_nondir(node, self.work_fd, tmp, content, filled=filled)
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

    def copy_tree(self, node: Node) -> str:
        """A full copy of the merged directory `node` under the work dir, made here and now; returns its name
        there. (A rename copies trees off the request loop: TreePlanner, build_tree, adopt.)"""
        planner = TreePlanner(self.tree, node).run()
        if planner.first:
            for child in planner.first:
                current = self.tree.resolve(child.path)
                if current is not None:
                    self.copy_up(current)
            planner = TreePlanner(self.tree, node).run()
        built = self.build_tree(planner.plan)
        self.adopt(built)
        return built.tmp

    def build_tree(self, plan: TreePlan) -> BuiltTree:
        """Copy a planned tree under the work dir: directories and lower files anew, upper files by a second
        link (no copy, same inode; the original name stays until the move is complete). It works only through
        fds it opens itself, so it may run in a worker thread while requests go on, as long as none of them
        changes the tree meanwhile (what an exclusive lease of pathlocks is for)."""
        node = plan.node
        tmp = self.tmpname()
        aliases: list[tuple[os.stat_result, Node]] = []
        with contextlib.ExitStack() as fds:
            sources = {index: fds.enter_context(self._open_dir(index, node.path)) for index in node.layers}
            above = fds.enter_context(self._open_dir(node.layer, node.path[:-1])) if node.path else None
            with self.staging(tmp):
                self._build_dir(plan, self.work_fd, tmp, sources, above, aliases)
        return BuiltTree(tmp, aliases)

    @contextlib.contextmanager
    def _open_dir(self, index: int, path: Path) -> Iterator[int]:
        fd = os.dup(self.tree.layers[index].root_fd)
        try:
            for name in path:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _build_dir(
        self,
        plan: TreePlan,
        dst_dir: int,
        name: str,
        sources: dict[int, int],
        above: int | None,
        aliases: list[tuple[os.stat_result, Node]],
    ) -> None:
        """Build directory `plan` at dst_dir/name: `sources` holds an fd of it in every layer it merges, `above`
        one of the directory holding it in the layer that shows it (None for the root)."""
        node = plan.node
        os.mkdir(name, 0o700, dir_fd=dst_dir)
        fd = os.open(name, DIR_FLAGS, dir_fd=dst_dir)
        try:
            for child in plan.children:
                if isinstance(child, TreePlan):
                    with contextlib.ExitStack() as fds:
                        below: dict[int, int] = {}
                        for index in child.node.layers:
                            below[index] = os.open(child.node.name, DIR_FLAGS, dir_fd=sources[index])
                            fds.callback(os.close, below[index])
                        self._build_dir(child, fd, child.node.name, below, sources[child.node.layer], aliases)
                elif child.layer == 0:
                    if child.meta_only:
                        raise OSError(errno.EAGAIN, "a metadata-only file must be copied up before its directory")
                    os.link(child.name, child.name, src_dir_fd=sources[0], dst_dir_fd=fd, follow_symlinks=False)
                else:
                    self._copy_nondir(child, fd, child.name, "full", src_dir=sources[child.layer])
                    aliases.append((os.stat(child.name, dir_fd=fd, follow_symlinks=False), child))
        finally:
            os.close(fd)
        self._set_meta(dst_dir, name, node.st, proc_path(above, node.name) if above is not None else None)
        aliases.append((os.stat(name, dir_fd=dst_dir, follow_symlinks=False), node))

    def adopt(self, built: BuiltTree) -> None:
        """Tell Upper.alias where the entries of a built tree now live (on the request loop)."""
        for st, node in built.aliases:
            self.alias(st, node)

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

    def place(self, src_fd: int, src: str, dirfd: int, name: str, is_dir: bool) -> bool:
        """Move src_fd/src to dirfd/name, replacing a whiteout or an empty (merged) upper directory there.

        Returns True when something was displaced: it is then left at src_fd/src for the caller to remove.
        """
        existing = lstat_at(dirfd, name)
        displaced = existing is not None and (is_dir or stat.S_ISDIR(existing.st_mode))
        if displaced:
            renameat2(src_fd, src, dirfd, name, RENAME_EXCHANGE)
            self.reshaped()
        else:
            os.rename(src, name, src_dir_fd=src_fd, dst_dir_fd=dirfd)
        if lstat_at(dirfd, whiteout_name(name)) is not None:
            os.unlink(whiteout_name(name), dir_fd=dirfd)
        return displaced

    def place_new(self, tmp: str, dirfd: int, name: str, is_dir: bool) -> None:
        """Move work-dir entry `tmp` into place; whatever it displaces is removed."""
        if self.place(self.work_fd, tmp, dirfd, name, is_dir):
            self.discard(tmp)


def opaque_xattr_for(work_fd: int) -> str:
    """The opaque xattr this process may write: the kernel's trusted one when privileged, else user.*."""
    probe = f"#probe.{os.getpid()}"
    os.mkdir(probe, 0o700, dir_fd=work_fd)
    try:
        for attr in (TRUSTED_OPAQUE, USER_OPAQUE):
            try:
                os.setxattr(proc_path(work_fd, probe), attr, b"y")
                return attr
            except OSError:
                continue
        return USER_OPAQUE
    finally:
        os.rmdir(probe, dir_fd=work_fd)


def can_chown(work_fd: int) -> bool:
    """Whether this process may give files away (root, or CAP_CHOWN over ids beyond its own)."""
    probe = f"#probe.{os.getpid()}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=work_fd))
    try:
        other = 1 if os.geteuid() != 1 else 2
        os.chown(probe, other, other, dir_fd=work_fd)
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe, dir_fd=work_fd)


def chardev_whiteouts_allowed(work_fd: int) -> bool:
    probe = f"#probe.{os.getpid()}"
    try:
        os.mknod(probe, stat.S_IFCHR, 0, dir_fd=work_fd)
    except OSError:
        return False
    os.unlink(probe, dir_fd=work_fd)
    return True


__all__ = [
    "OPAQUE_XATTRS",
    "THREADED_COPY_MIN",
    "BuiltTree",
    "StagedCopy",
    "TreePlan",
    "TreePlanner",
    "Upper",
    "chardev_whiteouts_allowed",
    "opaque_xattr_for",
    "proc_path",
]
