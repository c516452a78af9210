"""A layer: one directory of the union, opened as an fd and only ever walked with *at(dirfd, name, O_NOFOLLOW).

A symlink inside a layer is data, never a path to follow: `etc -> /etc` in an image must not lead the daemon
into the host's /etc. Directory fds are cached (bounded, LRU) and lent to callers, who may use them until the
request ends and never close them; the cache is flushed when the upper's directory tree is reshaped (rmdir,
rename). Fds leaving the cache are closed only by `end_request`, so a lent fd never dies under its borrower.

Layer is the facade every read of a layer goes through (as fuse-overlayfs's data_source): entries are named by
their path in the layer, and the walk is here alone. LayerSource is the part lower layers need, which another
kind of layer (a fake one in tests; a remote one fetched lazily) can implement; the upper is a Layer too, whose
writer (upper.py) works on the directory fds it lends.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

from .fetch import open_data
from .ownership import OverrideError, OverrideStat
from .ownership import parse as parse_override
from .privxattr import recorded_name
from .whiteout import (
    OPAQUE_MARKER,
    OPAQUE_XATTRS,
    OVERRIDE_STAT,
    TRUSTED_METACOPY,
    USER_METACOPY,
    is_chardev_whiteout,
    is_internal_xattr,
    is_whiteout_name,
    whited_out_target,
)

if TYPE_CHECKING:
    from .fetch import Fetcher

Path = tuple[str, ...]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FD_CACHE_SIZE = 256
LISTING_CACHE_SIZE = 4096


class DirView:
    """What one layer holds in one directory: real entries, whiteouts and the opaque flag."""

    __slots__ = ("_is_opaque", "entries", "whiteouts")

    def __init__(self, entries: dict[str, os.stat_result], whiteouts: set[str], opaque: bool) -> None:
        self.entries = entries
        self.whiteouts = whiteouts
        self._is_opaque = opaque

    @property
    def opaque(self) -> bool:
        return self._is_opaque

    def entry(self, name: str) -> os.stat_result | None:
        return self.entries.get(name)

    def whited(self, name: str) -> bool:
        return name in self.whiteouts

    def names(self) -> list[str]:
        return list(self.entries)


class LiveDirView(DirView):
    """A view of a writable directory that asks the disk on every call (the upper changes under us). Whether it
    is opaque is asked only when someone needs to know: most lookups never do."""

    __slots__ = ("_last", "_opaque", "fd", "plain")

    def __init__(self, fd: int, plain: set[int] | frozenset[int] = frozenset()) -> None:
        self.entries = {}
        self.whiteouts = set()
        self.fd = fd
        self.plain = plain  # inodes known to carry no ownership record (Layer.plain)
        self._opaque: bool | None = None
        self._last: tuple[str, os.stat_result | None] | None = None  # entry() then whited() of one name: one lstat

    @property
    def opaque(self) -> bool:
        if self._opaque is None:
            self._opaque = is_opaque(self.fd)
        return self._opaque

    def entry(self, name: str) -> os.stat_result | None:
        st = lstat_at(self.fd, name)
        self._last = (name, st)
        if st is None or is_chardev_whiteout(st.st_mode, st.st_rdev):
            return None
        if st.st_ino in self.plain:
            return st
        return effective_stat(self.fd, name, st)

    def whited(self, name: str) -> bool:
        st = self._last[1] if self._last is not None and self._last[0] == name else lstat_at(self.fd, name)
        if st is not None and is_chardev_whiteout(st.st_mode, st.st_rdev):
            return True
        return lstat_at(self.fd, ".wh." + name) is not None

    def names(self) -> list[str]:
        # Names only: whoever lists them looks each up (Tree.lookup), which skips whiteouts of either form; an
        # lstat and a record read of every entry here would only be done again there.
        return [name for name in os.listdir(self.fd) if not is_whiteout_name(name)]


def proc_path(dirfd: int, name: str | None = None) -> str:
    """A path naming `name` inside an open directory without walking the layer from its root again."""
    return f"/proc/self/fd/{dirfd}" if name is None else f"/proc/self/fd/{dirfd}/{name}"


def lstat_at(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # e.g. the `.wh.` twin of a 252..255-byte name: cannot exist
            return None
        raise


def read_override(dirfd: int, name: str | None) -> OverrideStat | None:
    """The ownership record of dirfd/name (of dirfd itself when name is None), if it has a valid one."""
    where = proc_path(dirfd, name)
    try:
        return parse_override(os.getxattr(where, OVERRIDE_STAT, follow_symlinks=False))
    except (OSError, OverrideError):
        return None


def effective_stat(dirfd: int, name: str | None, st: os.stat_result) -> os.stat_result:
    """What the mount shows of an entry: its lstat with any recorded ownership applied."""
    if stat.S_ISLNK(st.st_mode):
        return st  # symlinks cannot carry user.* xattrs
    record = read_override(dirfd, name)
    return st if record is None else record.apply(st)


def is_metacopy(dirfd: int, name: str, st: os.stat_result) -> bool:
    """A metadata-only copy-up: an upper file whose data still lives in the layers below. Only a regular file
    with a size and no blocks can be one, which spares the xattr lookup for every other file."""
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or st.st_blocks != 0:
        return False
    for attr in (TRUSTED_METACOPY, USER_METACOPY):
        try:
            os.getxattr(proc_path(dirfd, name), attr, follow_symlinks=False)
            return True
        except OSError:
            pass
    return False


def is_opaque(dirfd: int) -> bool:
    for attr in OPAQUE_XATTRS:
        try:
            if os.getxattr(dirfd, attr) == b"y":
                return True
        except OSError:
            pass
    return lstat_at(dirfd, OPAQUE_MARKER) is not None


def read_view(dirfd: int) -> DirView:
    """List a layer directory once: stat every entry, sort out whiteouts and markers."""
    entries: dict[str, os.stat_result] = {}
    whiteouts: set[str] = set()
    opaque = False
    for name in os.listdir(dirfd):
        if name == OPAQUE_MARKER:
            opaque = True
            continue
        if name.startswith(".wh."):
            target = whited_out_target(name)
            if target is not None:
                whiteouts.add(target)
            continue
        st = lstat_at(dirfd, name)
        if st is None:
            continue
        if is_chardev_whiteout(st.st_mode, st.st_rdev):
            whiteouts.add(name)
        else:
            entries[name] = effective_stat(dirfd, name, st)
    return DirView(entries, whiteouts, opaque or is_opaque(dirfd))


def read_xattrs(where: str | int) -> dict[str, bytes]:
    """The xattrs of `where` (a path not followed, or an fd) a copy takes along: those a user set, ownership
    records and records of privileged xattrs; union bookkeeping stays behind."""
    try:
        names = os.listxattr(where, follow_symlinks=False)
    except OSError:
        return {}
    return {
        name: os.getxattr(where, name, follow_symlinks=False)
        for name in names
        if not is_internal_xattr(name) or name == OVERRIDE_STAT or recorded_name(name) is not None
    }


class EntryReader(Protocol):
    """What a copy reads of an entry, named by its path: a link's target, a file's data, its xattrs."""

    def readlink(self, path: Path) -> str: ...
    def open_file(self, path: Path, flags: int = os.O_RDONLY) -> int: ...
    def xattrs(self, path: Path) -> dict[str, bytes]: ...


class LayerSource(EntryReader, Protocol):
    """What the union reads of a layer: directories as views, entries by their path in the layer. Lower layers
    need no more; a layer that is not a local directory (a remote one fetched lazily) implements this."""

    index: int
    writable: bool
    fetcher: Fetcher | None  # for placeholders (fetch.py); None: every file's data is here

    def view(self, path: Path) -> DirView | None: ...
    def root_stat(self) -> os.stat_result: ...
    def getxattr(self, path: Path, name: str) -> bytes: ...
    def listxattr(self, path: Path) -> list[str]: ...
    def is_metacopy(self, path: Path, st: os.stat_result) -> bool: ...
    def statvfs(self) -> os.statvfs_result: ...
    def hard_links(self, ino: int) -> list[Path]: ...
    def open_dir(self, path: Path) -> int: ...
    def end_request(self) -> None: ...
    def close(self) -> None: ...


class OpenDir:
    """A directory fd a caller opened itself (a worker thread does not borrow the loop's), read as a layer is:
    entries named by a path of one name."""

    def __init__(self, fd: int, fetcher: Fetcher | None = None) -> None:
        self.fd = fd
        self.fetcher = fetcher

    def readlink(self, path: Path) -> str:
        return os.readlink(path[-1], dir_fd=self.fd)

    def open_file(self, path: Path, flags: int = os.O_RDONLY) -> int:
        return open_data(os.open(path[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd), self.fetcher)

    def xattrs(self, path: Path) -> dict[str, bytes]:
        return read_xattrs(proc_path(self.fd, path[-1]))


class Layer:
    """One directory of the union. Index 0 is the top; the upper, when there is one, is index 0. A read-only
    layer given a `fetcher` may hold placeholders whose data it fetches on open (fetch.py)."""

    def __init__(
        self, path: str, index: int, writable: bool, fd_cache: int = FD_CACHE_SIZE, fetcher: Fetcher | None = None
    ) -> None:
        self.path = path
        self.fetcher = None if writable else fetcher
        self.fd_cache = fd_cache
        self.index = index
        self.writable = writable
        self.root_fd = os.open(path, DIR_FLAGS)
        self.dev = os.fstat(self.root_fd).st_dev
        self._fds: OrderedDict[Path, int] = OrderedDict()
        self._retired: list[int] = []
        self._views: OrderedDict[Path, DirView | None] = OrderedDict()
        self._links: dict[int, list[Path]] | None = None
        # Of a writable layer: inodes its writer made and knows to carry no ownership record, whose lstat is then
        # what the mount shows without reading the record's xattr. The writer keeps it true: an inode leaves it
        # before a record is put on it (upper.py).
        self.plain: set[int] = set()

    def dirfd(self, path: Path) -> int:
        """A borrowed fd of directory `path` in this layer; raises OSError when it is not a directory here."""
        if not path:
            return self.root_fd
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        parent = self.dirfd(path[:-1])
        fd = os.open(path[-1], DIR_FLAGS, dir_fd=parent)
        self._fds[path] = fd
        if len(self._fds) > self.fd_cache:
            self._retired.append(self._fds.popitem(last=False)[1])
        return fd

    def open_dir(self, path: Path) -> int:
        """A new fd of directory `path`, the caller's to close (for a worker thread: the cache is the loop's)."""
        fd = os.dup(self.root_fd)
        try:
            for name in path:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def where(self, path: Path) -> str:
        """A /proc path naming entry `path` (its final component is not followed by callers that do not follow).
        The layer's root is named as `.` in it: calls that do not follow a final symlink would otherwise act on
        the /proc link itself (ENOTSUP for its xattrs, which the kernel asks of the mount's root for its ACL)."""
        if not path:
            return proc_path(self.root_fd, ".")
        return proc_path(self.dirfd(path[:-1]), path[-1])

    def lstat(self, path: Path) -> os.stat_result | None:
        """Entry `path`'s own lstat, or None when there is none."""
        if not path:
            return os.fstat(self.root_fd)
        return lstat_at(self.dirfd(path[:-1]), path[-1])

    def root_stat(self) -> os.stat_result:
        """What the root shows: its stat with any ownership record applied."""
        return effective_stat(self.root_fd, None, os.fstat(self.root_fd))

    def readlink(self, path: Path) -> str:
        return os.readlink(path[-1], dir_fd=self.dirfd(path[:-1]))

    def open_file(self, path: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
        """An fd of entry `path` (never through a symlink), opened with `flags`; for a lazy layer's placeholder,
        an fd of its fetched data."""
        fd = os.open(path[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.dirfd(path[:-1]))
        return open_data(fd, self.fetcher)

    def getxattr(self, path: Path, name: str) -> bytes:
        return os.getxattr(self.where(path), name, follow_symlinks=False)

    def listxattr(self, path: Path) -> list[str]:
        return os.listxattr(self.where(path), follow_symlinks=False)

    def xattrs(self, path: Path) -> dict[str, bytes]:
        """The xattrs of `path` a copy of it takes along (read_xattrs)."""
        return read_xattrs(self.where(path))

    def is_metacopy(self, path: Path, st: os.stat_result) -> bool:
        """Whether entry `path`, whose lstat is `st`, is a metadata-only copy-up."""
        return is_metacopy(self.dirfd(path[:-1]), path[-1], st)

    def statvfs(self) -> os.statvfs_result:
        return os.statvfs(proc_path(self.root_fd))

    def view(self, path: Path) -> DirView | None:
        """The directory `path` as this layer has it, or None when it has no directory there."""
        if self.writable:
            try:
                return LiveDirView(self.dirfd(path), self.plain)
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    return None
                raise
        if path in self._views:
            self._views.move_to_end(path)
            return self._views[path]
        try:
            view: DirView | None = read_view(self.dirfd(path))
        except (FileNotFoundError, NotADirectoryError):
            view = None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            view = None
        self._views[path] = view
        if len(self._views) > LISTING_CACHE_SIZE:
            self._views.popitem(last=False)
        return view

    def hard_links(self, ino: int) -> list[Path]:
        """Every path in this (read-only) layer naming inode `ino`, from a map built once by walking it."""
        if self._links is None:
            self._links = {}
            self._collect_links((), self.root_fd)
        return self._links.get(ino, [])

    def _collect_links(self, path: Path, fd: int) -> None:
        with os.scandir(fd) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    child = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                    try:
                        self._collect_links((*path, entry.name), child)
                    finally:
                        os.close(child)
                elif st.st_nlink > 1:
                    assert self._links is not None
                    self._links.setdefault(st.st_ino, []).append((*path, entry.name))

    def flush(self) -> None:
        """Forget cached directory fds: call after a directory of this layer moved or vanished."""
        self._retired.extend(self._fds.values())
        self._fds.clear()

    def end_request(self) -> None:
        """Close the fds that left the cache during the request that just ended."""
        while self._retired:
            os.close(self._retired.pop())

    def close(self) -> None:
        self.flush()
        self.end_request()
        os.close(self.root_fd)


def is_dir(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode)
