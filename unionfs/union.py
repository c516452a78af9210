"""The union filesystem's operations on the merged view, in terms of paths and Nodes. No pyfuse3 here.

ops.py maps FUSE requests (inode numbers, file handles) onto these methods; everything here raises OSError /
UnionError with the errno the caller should see.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from . import acl
from .attrs import AttrChange, Owner
from .caches import changes
from .datacopy import THREADED_COPY_MIN, StagedCopy
from .errors import UnionError
from .fetch import Pending, key_at
from .layers import Path, proc_path
from .names import check_length, check_name
from .ownership import replace_stat
from .privxattr import is_privileged, record_name, shown_names
from .rename import Renames
from .syscalls import fallocate
from .tree import Node, Tree
from .upper import Content, Upper
from .whiteout import is_chardev_whiteout, is_internal_xattr

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR
DEFAULT_ACL_CACHE = 4096
PASS_FLAGS = os.O_ACCMODE | os.O_APPEND | os.O_SYNC | os.O_DSYNC | os.O_NOATIME | os.O_TRUNC


class UnionFS(Renames):
    """The merged view's operations. Every one that may change the upper is marked @changes (caches.py)."""

    def __init__(self, tree: Tree, upper: Upper | None) -> None:
        self.tree = tree
        self.upper = upper
        self.generation = 0  # moved by every change to the upper (@changes): ops.py's caches hold while it stands
        # Directories' default ACLs (None: none), read for every entry made in them; they change only by an xattr
        # change (which empties this) or with the tree's shape (by path: the shape they were read in)
        self._defaults: dict[Path, tuple[int, bytes | None]] = {}

    def end_request(self) -> None:
        for layer in self.tree.layers:
            layer.end_request()

    # -- reading -----------------------------------------------------------------------------------------------

    def resolve(self, path: Path) -> Node:
        node = self.tree.resolve(path)
        if node is None:
            raise UnionError(errno.ENOENT)
        return node

    def directory(self, path: Path) -> Node:
        """Directory `path` as a parent of what is asked for (see Tree.directory)."""
        node = self.tree.directory(path)
        if node is None:
            raise UnionError(errno.ENOENT if self.tree.resolve(path) is None else errno.ENOTDIR)
        return node

    def lookup(self, parent: Node, name: str) -> Node:
        check_length(name)
        if not parent.is_dir:
            raise UnionError(errno.ENOTDIR)
        node = self.tree.lookup(parent, name)
        if node is None:
            raise UnionError(errno.ENOENT)
        return node

    def _upper_dirfd(self, node: Node) -> int:
        """A borrowed fd of the upper directory holding upper entry `node` (copied up by the caller)."""
        return self._writer().layer.dirfd(node.path[:-1])

    def location(self, node: Node) -> str:
        """A /proc path naming upper entry `node` (see Layer.where), for the calls that change it."""
        return self._writer().layer.where(node.path)

    def readlink(self, node: Node) -> str:
        if not stat.S_ISLNK(node.st.st_mode):
            raise UnionError(errno.EINVAL)
        return self.tree.layers[node.layer].readlink(node.path)

    def open(self, node: Node, flags: int) -> tuple[int, Node]:
        """Open a file: for writing, copy it up first. Returns the fd and the node as it now is."""
        if node.is_dir:
            raise UnionError(errno.EISDIR)
        writing = bool(flags & (WRITE_FLAGS | os.O_TRUNC))
        if writing:
            node = self._copy_up(node, "empty" if flags & os.O_TRUNC else "full")
        if flags & os.O_TRUNC:
            self._truncating()
        open_flags = (flags & PASS_FLAGS) | os.O_NOFOLLOW | os.O_CLOEXEC
        if not writing:
            open_flags &= ~os.O_NOATIME
        data = self._data_node(node)
        return self.tree.layers[data.layer].open_file(data.path, open_flags), node

    @changes
    def _truncating(self) -> None:
        """An upper file is about to lose its data (O_TRUNC): cached sizes are stale."""
        self._writer()

    def _data_node(self, node: Node) -> Node:
        """Where a file's data lives: itself, or for a metadata-only copy-up the lower file below it."""
        if not node.meta_only or self.upper is None:
            return node
        return self.upper.source_below(node) or node

    def placeholder(self, node: Node) -> Pending | None:
        """For a file whose data a lazy layer has yet to fetch (fetch.py), what fetches it, for the caller to run
        off the request loop; None when its data is here."""
        if not stat.S_ISREG(node.st.st_mode):
            return None
        data = self._data_node(node)
        layer = self.tree.layers[data.layer]
        if layer.fetcher is None:
            return None
        key = key_at(lambda name: layer.getxattr(data.path, name))
        return None if key is None else Pending(layer.fetcher, key)

    def copy_fetches(self, node: Node, content: Content) -> Pending | None:
        """What copying `node` up for `content` has to fetch first (see placeholder), if anything."""
        if self.upper is None or not stat.S_ISREG(node.st.st_mode) or self.upper.content(node, content) != "full":
            return None
        return self.placeholder(node)

    def reopen_from_upper(self, node: Node) -> int | None:
        """A read-only fd of the upper copy of `node`, or None when it is not in the upper."""
        if node.layer != 0 or node.meta_only or self.upper is None:
            return None
        return self.upper.layer.open_file(node.path, os.O_RDONLY)  # (an upper entry: layer 0)

    def getxattr(self, node: Node, name: str) -> bytes:
        if is_internal_xattr(name):
            raise UnionError(errno.ENODATA)
        layer = self.tree.layers[node.layer]
        if is_privileged(name):  # a record kept by an unprivileged writer (privxattr.py) wins over the disk's own
            try:
                return layer.getxattr(node.path, record_name(name))
            except OSError:
                pass
        return layer.getxattr(node.path, name)

    def strips_on_write(self, node: Node, new: bool = False) -> bool:
        """Whether `node` carries what a write strips: setuid, setgid with group execute, file capabilities (which
        a file just created (`new`) cannot have yet)."""
        mode = node.st.st_mode
        if mode & stat.S_ISUID or mode & (stat.S_ISGID | stat.S_IXGRP) == stat.S_ISGID | stat.S_IXGRP:
            return True
        if new:
            return False
        try:
            self.getxattr(node, "security.capability")
        except OSError:
            return False
        return True

    def listxattr(self, node: Node) -> list[str]:
        names = self.tree.layers[node.layer].listxattr(node.path)
        return [n for n in shown_names(names) if not is_internal_xattr(n)]

    def statvfs(self) -> os.statvfs_result:
        return self.tree.layers[0].statvfs()

    def children(self, node: Node) -> list[Node]:
        if not node.is_dir:
            raise UnionError(errno.ENOTDIR)
        return self.tree.children(node)

    # -- writing -----------------------------------------------------------------------------------------------

    def _writer(self) -> Upper:
        """The upper, for an operation (marked @changes) about to change it; EROFS without one."""
        if self.upper is None:
            raise UnionError(errno.EROFS)
        return self.upper

    def _copy_up(self, node: Node, content: Content = "full") -> Node:
        if node.layer == 0 and not (node.meta_only and content != "meta"):
            return node
        return self._copied_up(node, content)

    @changes
    def _copied_up(self, node: Node, content: Content) -> Node:
        self._writer().copy_up(node, content)
        return self.resolve(node.path)

    @changes
    def copy_up(self, node: Node) -> Node:
        """Bring `node` into the upper whole, here and now; returns it as it now is."""
        return self._copy_up(node)

    def stage_copy_up(self, node: Node, content: Content = "full") -> StagedCopy | None:
        """For a large file about to be copied up with its data (`content` as for _copy_up): its copy-up begun,
        for the data to be copied off the request loop (StagedCopy.run) and then finished by copy_up_staged.
        A lower file's data goes to a new file; a metadata-only upper file is filled in place. None for
        anything else."""
        upper = self.upper
        if (
            upper is None
            or not stat.S_ISREG(node.st.st_mode)
            or node.st.st_size < THREADED_COPY_MIN
            or upper.content(node, content) != "full"
        ):
            return None
        if node.layer != 0:
            return upper.stage(node)
        source = self._data_node(node)
        return upper.stage_fill(node, source) if source is not node else None

    @changes
    def copy_up_staged(self, node: Node, staged: StagedCopy) -> None:
        """Copy `node` up with the data `staged` holds, if it is still the file staged: `node` is resolved
        anew, as other requests may have moved, removed or copied up the file while its data was copied."""
        if staged.matches(node):
            self._writer().copy_up(node, "full", staged)

    def unstage(self, staged: StagedCopy) -> None:
        """Release what stage_copy_up took (which only an upper can have given)."""
        assert self.upper is not None
        self.upper.unstage(staged)

    def _owner_for(self, parent: Node, owner: Owner, mode: int) -> tuple[Owner, int]:
        """Apply the setgid-directory rule: what the kernel would do had we created in place."""
        if parent.st.st_mode & stat.S_ISGID:
            owner = Owner(owner.uid, parent.st.st_gid, owner.umask)
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        return owner, mode

    def _new_entry(
        self,
        parent: Node,
        name: str,
        is_dir: bool,
        build: Callable[[int, str, int], None],
        owner: Owner | None,
        mode: int,
        rdev: int = 0,
    ) -> Node:
        """Create `name` in `parent`: build it under the work dir (`build(work_fd, tmp, bits)`, where `bits` are
        the permission bits it should end with, should it be able to set them as it makes it), give it its owner
        and mode, move it in."""
        upper = self._writer()
        check_name(name)
        if not parent.is_dir:
            raise UnionError(errno.ENOTDIR)
        if self.tree.lookup(parent, name) is not None:
            raise UnionError(errno.EEXIST)
        inherited: dict[str, bytes] = {}
        if owner is not None and not stat.S_ISLNK(mode):
            mode, inherited = self._inherit(parent, mode, owner.umask)
        parent_fd = upper.ensure_dir(parent)
        opaque = is_dir and self.tree.lower_has(parent, name)
        if owner is not None:
            owner, mode = self._owner_for(parent, owner, mode)
        tmp = upper.tmpname()
        build(upper.work_fd, tmp, upper.disk_mode(mode))
        try:
            for acl_name, value in inherited.items():
                self._store_xattr(proc_path(upper.work_fd, tmp), acl_name, value)
            if owner is not None:  # a new inode (not a new name of an existing one)
                st = os.stat(tmp, dir_fd=upper.work_fd, follow_symlinks=False)
                upper.set_owner_mode(
                    upper.work_fd,
                    tmp,
                    replace_stat(st, uid=owner.uid, gid=owner.gid, mode=mode, rdev=rdev),
                    st,  # (new: no ownership record on it)
                )
                upper.fresh(st)
                if upper.privileged:
                    upper.made_plain(st.st_ino)
            if opaque:
                upper.make_opaque(upper.work_fd, tmp)
            upper.place_new(tmp, parent_fd, name, is_dir, free=True)
        except BaseException:
            upper.discard(tmp)
            raise
        return self._created(parent, name)

    def _inherit(self, parent: Node, mode: int, umask: int) -> tuple[int, dict[str, bytes]]:
        """The mode and ACLs of an entry about to be created in `parent` with `mode`: from the parent's default
        ACL where it has one (a directory inherits the default ACL itself too), else `mode` less the umask."""
        value = self._default_acl(parent)
        if value is None:
            return mode & ~umask, {}
        try:
            default = acl.parse(value)
        except OSError:
            return mode & ~umask, {}
        access, mode = acl.inherit(default, mode)
        inherited = {} if access is None else {acl.ACCESS: acl.encode(access)}
        if stat.S_ISDIR(mode):
            inherited[acl.DEFAULT] = acl.encode(default)
        return mode, inherited

    def _default_acl(self, parent: Node) -> bytes | None:
        """Directory `parent`'s default ACL as stored, or None."""
        known = self._defaults.get(parent.path)
        if known is not None and known[0] == self.tree.shape:
            return known[1]
        try:
            value: bytes | None = self.getxattr(parent, acl.DEFAULT)
        except OSError:
            value = None
        if len(self._defaults) >= DEFAULT_ACL_CACHE:
            self._defaults.clear()
        self._defaults[parent.path] = (self.tree.shape, value)
        return value

    def _created(self, parent: Node, name: str) -> Node:
        """The entry just made under `parent`: looked up there, unless the parent only now entered the upper."""
        if parent.layers[0] == 0:
            node = self.tree.lookup(parent, name)
            if node is not None:
                return node
        return self.resolve((*parent.path, name))

    @changes
    def create(self, parent: Node, name: str, mode: int, flags: int, owner: Owner) -> tuple[int, Node]:
        fds: list[int] = []

        def build(work: int, tmp: str, bits: int) -> None:
            open_flags = (flags & PASS_FLAGS & ~os.O_ACCMODE) | os.O_RDWR | os.O_CREAT | os.O_EXCL
            # made with its final permission bits (under our own work dir) where the daemon's umask lets it: the
            # chmod after is then spared
            fds.append(os.open(tmp, open_flags | os.O_CLOEXEC, bits & 0o777, dir_fd=work))

        try:
            node = self._new_entry(parent, name, False, build, owner, stat.S_IFREG | stat.S_IMODE(mode))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds[0], node

    @changes
    def mkdir(self, parent: Node, name: str, mode: int, owner: Owner) -> Node:
        return self._new_entry(
            parent,
            name,
            True,
            lambda work, tmp, _bits: os.mkdir(tmp, 0o700, dir_fd=work),
            owner,
            stat.S_IFDIR | stat.S_IMODE(mode),
        )

    @changes
    def mknod(self, parent: Node, name: str, mode: int, rdev: int, owner: Owner) -> Node:
        check_name(name)
        if is_chardev_whiteout(mode, rdev):
            raise UnionError(errno.EPERM, "a 0/0 character device is a whiteout")
        upper = self._writer()

        def build(work: int, tmp: str, _bits: int) -> None:
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                upper.make_device(work, tmp, mode, rdev)
            else:
                os.mknod(tmp, mode, rdev, dir_fd=work)

        return self._new_entry(parent, name, False, build, owner, mode, rdev)

    @changes
    def symlink(self, parent: Node, name: str, target: str, owner: Owner) -> Node:
        return self._new_entry(
            parent,
            name,
            False,
            lambda work, tmp, _bits: os.symlink(target, tmp, dir_fd=work),
            owner,
            stat.S_IFLNK | 0o777,
        )

    @changes
    def link(self, node: Node, parent: Node, name: str) -> Node:
        check_name(name)  # before the copy-up
        if node.is_dir:
            raise UnionError(errno.EPERM)
        node = self._copy_up(node)
        src_fd = self._upper_dirfd(node)

        def build(work: int, tmp: str, _bits: int) -> None:
            os.link(node.name, tmp, src_dir_fd=src_fd, dst_dir_fd=work, follow_symlinks=False)

        return self._new_entry(parent, name, False, build, None, node.st.st_mode)

    @changes
    def unlink(self, parent: Node, name: str, node: Node | None = None) -> None:
        """Remove non-directory `name` of `parent`; `node`: it as the caller just looked it up."""
        check_length(name)
        upper = self._writer()
        if node is None:
            node = self.lookup(parent, name)
        if node.is_dir:
            raise UnionError(errno.EISDIR)
        whiteout = self.tree.lower_has(parent, name)
        parent_fd = upper.ensure_dir(parent)
        if whiteout:
            upper.make_whiteout(parent_fd, name)
        else:
            os.unlink(name, dir_fd=parent_fd)

    @changes
    def rmdir(self, parent: Node, name: str) -> None:
        try:
            self._rmdir(parent, name)
        finally:
            self.tree.reshaped()

    def _rmdir(self, parent: Node, name: str) -> None:
        check_length(name)
        upper = self._writer()
        node = self.lookup(parent, name)
        if not node.is_dir:
            raise UnionError(errno.ENOTDIR)
        if not self.tree.is_empty(node):
            raise UnionError(errno.ENOTEMPTY)
        whiteout = self.tree.lower_has(parent, name)
        parent_fd = upper.ensure_dir(parent)
        if node.layer == 0:
            upper.remove_entry(parent_fd, name, whiteout)
        elif whiteout:
            upper.make_whiteout(parent_fd, name)

    @changes
    def setattr(self, node: Node, change: AttrChange, fd: int | None = None) -> Node:
        """chmod, chown, truncate, utimes of `node` (copied up first: data only for a truncation that keeps
        some); `fd`, when given, an upper fd of it to truncate through."""
        if node.is_dir:
            self.tree.reshaped()  # cached directories carry their mode and owner
        size = change.size
        node = self._copy_up(node, "meta" if size is None else "empty" if size == 0 else "full")
        where = self.location(node)
        if change.uid is not None or change.gid is not None or change.mode is not None:
            self._change_owner_mode(node, change.uid, change.gid, change.mode)
        if size is not None:
            if fd is not None:
                os.ftruncate(fd, size)
            else:
                os.truncate(where, size)
        if change.sets_times:
            both = change.atime_ns is not None and change.mtime_ns is not None
            kept = None if both else os.stat(where, follow_symlinks=False)
            os.utime(where, ns=change.times_ns(kept), follow_symlinks=False)
        return self.resolve(node.path)

    @changes
    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> None:
        """fallocate(2) on `fd`, a handle's upper file (opening it for writing copied it up): every mode the
        upper's filesystem has, with its answer where it has not."""
        self._writer()
        fallocate(fd, mode, offset, length)

    @changes
    def setattr_unlinked(self, fd: int, change: AttrChange) -> os.stat_result:
        """setattr of an upper file whose every name is gone, through an fd still open on it (ftruncate,
        fchmod, futimens after unlink, as a local filesystem allows). Returns its stat."""
        upper = self._writer()
        st = os.fstat(fd)
        if change.uid is not None or change.gid is not None:
            if not upper.privileged:
                raise UnionError(errno.EPERM, "an unlinked file keeps no ownership record")
            os.fchown(
                fd, st.st_uid if change.uid is None else change.uid, st.st_gid if change.gid is None else change.gid
            )
        if change.mode is not None:
            os.fchmod(fd, upper.disk_mode(stat.S_IFMT(st.st_mode) | stat.S_IMODE(change.mode)))
        if change.size is not None:
            os.ftruncate(fd, change.size)
        if change.sets_times:
            os.utime(fd, ns=change.times_ns(st))
        return os.fstat(fd)

    def _change_owner_mode(self, node: Node, uid: int | None, gid: int | None, mode: int | None) -> None:
        st = node.st
        new_mode = st.st_mode if mode is None else stat.S_IFMT(st.st_mode) | stat.S_IMODE(mode)
        if (uid is not None or gid is not None) and mode is None and not stat.S_ISDIR(st.st_mode):
            # a change of owner drops setuid, and setgid where it means something, as the kernel does
            new_mode &= ~stat.S_ISUID
            if new_mode & stat.S_IXGRP:
                new_mode &= ~stat.S_ISGID
        effective = replace_stat(
            st, uid=st.st_uid if uid is None else uid, gid=st.st_gid if gid is None else gid, mode=new_mode
        )
        self._writer().set_owner_mode(self._upper_dirfd(node), node.name, effective)
        if mode is not None and not stat.S_ISLNK(st.st_mode):
            self._chmod_recorded_acl(self.location(node), new_mode)

    def _chmod_recorded_acl(self, where: str, mode: int) -> None:
        """After a chmod: an access ACL kept as a record follows the mode, as the kernel rewrites a real one."""
        try:
            entries = acl.parse(os.getxattr(where, record_name(acl.ACCESS), follow_symlinks=False))
        except OSError:
            return
        os.setxattr(where, record_name(acl.ACCESS), acl.encode(acl.chmod(entries, mode)), follow_symlinks=False)

    def check_xattr_change(self, name: str, setting: bool) -> None:
        """Refuse to set or remove an xattr the union filesystem keeps for itself, before anything is copied."""
        if is_internal_xattr(name) and setting:
            raise UnionError(errno.EPERM, f"{name} belongs to the union filesystem")
        if is_internal_xattr(name):
            raise UnionError(errno.ENODATA)  # (it does not show, so there is nothing to remove)

    @changes
    def setxattr(self, node: Node, name: str, value: bytes, *, drops_setgid: bool = False) -> None:
        """Set an xattr; a `security.*` or `trusted.*` one as a record where the upper's writer may not set it.
        A POSIX ACL sets the mode as the kernel does (acl.py); an access ACL clears setgid with `drops_setgid`
        (a caller outside the file's group, permissions.Checker.drops_setgid)."""
        self.check_xattr_change(name, True)
        self._defaults.clear()
        if name in acl.NAMES:
            self._set_acl(node, name, value, drops_setgid)
            return
        node = self._copy_up(node, "meta")
        where = self.location(node)
        if not is_privileged(name):
            os.setxattr(where, name, value, follow_symlinks=False)
        elif self.upper is not None and not self.upper.privileged:
            os.setxattr(where, record_name(name), value, follow_symlinks=False)
        else:
            os.setxattr(where, name, value, follow_symlinks=False)
            _remove_if_there(where, record_name(name))  # a record would hide what was just set

    def _set_acl(self, node: Node, name: str, value: bytes, drops_setgid: bool) -> None:
        """Set an access ACL (the mode follows it; one that says no more than a mode is stored as that mode
        only, as on ext4) or a default ACL (directories only)."""
        entries = acl.parse(value)
        if stat.S_ISLNK(node.st.st_mode):
            raise UnionError(errno.EOPNOTSUPP)
        if name == acl.DEFAULT and not node.is_dir:
            raise UnionError(errno.EACCES)
        node = self._copy_up(node, "meta")
        where = self.location(node)
        if name == acl.DEFAULT:
            self._store_xattr(where, name, value)
            return
        if acl.equivalent(entries):
            _remove_if_there(where, record_name(name))
            _remove_if_there(where, name)
        else:
            self._store_xattr(where, name, acl.encode(entries))
        if node.is_dir:
            self.tree.reshaped()  # cached directories carry their mode
        mode = acl.with_mode(node.st.st_mode, entries)
        self._change_owner_mode(node, None, None, mode & ~stat.S_ISGID if drops_setgid else mode)

    def _store_xattr(self, where: str, name: str, value: bytes) -> None:
        """Keep a privileged xattr (or an ACL) at `where` for real where the writer may, else as a record."""
        assert self.upper is not None
        if self.upper.privileged:
            try:
                os.setxattr(where, name, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EPERM):
                    raise
            else:
                _remove_if_there(where, record_name(name))  # a record would hide what was just set
                return
        try:
            os.setxattr(where, record_name(name), value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno != errno.EPERM:  # Linux keeps user.* xattrs off fifos and sockets: lost there
                raise

    @changes
    def removexattr(self, node: Node, name: str) -> None:
        """Remove an xattr: a privileged one's record and the xattr on disk, whichever it has."""
        self.check_xattr_change(name, False)
        self._defaults.clear()
        node = self._copy_up(node, "meta")
        where = self.location(node)
        if is_privileged(name) and _remove_if_there(where, record_name(name)):
            _remove_if_there(where, name)  # and the one on disk, where the writer may remove it
            return
        os.removexattr(where, name, follow_symlinks=False)


def _remove_if_there(where: str, name: str) -> bool:
    """Remove xattr `name` if `where` has it and it may be removed; whether it was."""
    try:
        os.removexattr(where, name, follow_symlinks=False)
    except OSError:
        return False
    return True
