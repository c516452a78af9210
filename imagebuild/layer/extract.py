"""Safe, atomic extraction of a layer tar (plain, gzip or zstd) into a layer directory.

Safety: a layer tar is untrusted input.
- Entry names and hard-link targets are relative: an absolute name or a `..` component is a LayerError.
- Every parent is opened from the extraction root one component at a time with O_NOFOLLOW: an entry whose
  parent on disk is a symlink (or not a directory) is a LayerError. Symlinks are created exactly as given and
  never followed; an entry replacing a symlink replaces the link itself.
- A hard link must point at a non-directory extracted earlier from the same tar (and still there).
- Internal xattrs (`whiteouts.is_kept_out`: overlay bookkeeping, `user.containers.override_*` records,
  `security.selinux`) in the tar are ignored: a layer cannot forge union metadata.

Duplicates: the last entry for a name wins (as with docker and GNU tar): the earlier entry is removed first
(a whole directory tree if need be). A directory entry for an existing directory only updates its metadata.

Whiteouts (`.wh.NAME` files, and char devices 0/0 in the tar) and opaque markers (`.wh..wh..opq`) are written
in the requested form: "chardev" = a char device 0/0 at NAME and the xattr `trusted.overlay.opaque=y`
(`user.overlay.opaque=y` when rootless) on the directory; "file" = `.wh.NAME` and `.wh..wh..opq` kept as empty
files. In the chardev form a whiteout for a name this layer also holds does not remove it (OCI: whiteouts only
apply to lower layers); for a directory it makes the directory opaque instead. Other `.wh..wh.*` entries (aufs
metadata) are skipped.

Rootless (`rootless=True`: no chown, no device nodes): the owner and mode of each regular file and directory
(and of the root) go into `user.containers.override_stat`; on disk the files stay ours with mode |0600 (|0700
for directories). Char and block devices become empty regular placeholders whose record carries the file type,
with `user.unionfs.rdev` = `major:minor`. Fifos are real fifos; their owner is not kept (Linux allows no user
xattrs on fifos or symlinks). `security.*` and `trusted.*` xattrs, which an ordinary user may not set, are kept
as `user.containers.override_NAME` records (unionfs.privxattr), which unionfs shows and the tar writer writes
as NAME; on symlinks and fifos they are lost. `security.capability` is set in v2 form (a v3 for the image's root
becomes v2), as root or as a record.

Atomicity: everything is extracted into a fresh temporary directory beside `dest_dir`, flushed (syncfs), and
renamed onto `dest_dir` (which must be missing or empty); on any error the temporary directory is removed.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, BinaryIO, Literal, Protocol, cast

from imagebuild.layer import whiteouts as wh
from imagebuild.layer._fs import CHUNK, O_DIR, ZSTD, at_path, set_xattr, write_all
from imagebuild.layer.errors import LayerError
from imagebuild.layer.newdir import IMPLICIT_DIR_MODE as _IMPLICIT_DIR_MODE
from imagebuild.layer.newdir import new_dir
from unionfs import CAPABILITY, image_capability, is_privileged, record_name

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

WhiteoutForm = Literal["chardev", "file"]
Parts = tuple[str, ...]


class MemberData(Protocol):
    """Where the data of regular members comes from: a TarFile, or what a skeleton (lazy/skeleton.py) has."""

    def extractfile(self, member: tarfile.TarInfo) -> IO[bytes] | None: ...


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MARKER_MODE = 0o644
_LENIENT_XATTR_ERRORS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES)


class _Prefixed(io.RawIOBase):
    """`prefix` followed by the rest of `src` (for sniffing the magic of a non-seekable stream)."""

    def __init__(self, prefix: bytes, src: BinaryIO) -> None:
        super().__init__()
        self._prefix = prefix
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            count = min(len(view), len(self._prefix))
            view[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        data = self._src.read(len(view))
        view[: len(data)] = data
        return len(data)


def _read_upto(src: BinaryIO, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = src.read(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _decompressed(src: BinaryIO, stack: contextlib.ExitStack) -> IO[bytes]:
    """`src` as an uncompressed tar stream: gzip and zstd are recognised by their magic numbers."""
    head = _read_upto(src, 4)
    stream: IO[bytes] = stack.enter_context(io.BufferedReader(_Prefixed(head, src), CHUNK))
    if head.startswith(GZIP_MAGIC):
        return cast(IO[bytes], stack.enter_context(gzip.GzipFile(fileobj=stream, mode="rb")))
    if head == ZSTD_MAGIC:
        if ZSTD is None:
            raise LayerError("zstd-compressed layer, but the 'zstandard' module is not installed")
        reader = ZSTD.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        return cast(IO[bytes], stack.enter_context(reader))
    return stream


@contextlib.contextmanager
def _open_tar(src: BinaryIO) -> Iterator[tarfile.TarFile]:
    with contextlib.ExitStack() as stack:
        stream = _decompressed(src, stack)
        with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
            yield tar


def _split(name: str, link_of: str | None = None) -> Parts:
    """Validated path components of a tar name (or of the hard-link target of entry `link_of`): relative,
    no `..`; `.` and empty components dropped."""
    label = repr(name) if link_of is None else f"{link_of!r}: hard link target {name!r}"
    if name.startswith("/"):
        raise LayerError(f"{label} is an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise LayerError(f"{label} has a '..' component")
    return parts


def _mtime_ns(member: tarfile.TarInfo) -> int:
    mtime = member.mtime
    return mtime * 1_000_000_000 if isinstance(mtime, int) else round(mtime * 1_000_000_000)


def _tar_xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    prefix = "SCHILY.xattr."
    found = [
        (key[len(prefix) :], value.encode("utf-8", "surrogateescape"))
        for key, value in member.pax_headers.items()
        if key.startswith(prefix)
    ]
    return sorted((name, value) for name, value in found if not wh.is_kept_out(name))


@dataclass(frozen=True)
class _DirMeta:
    mode: int
    mtime_ns: int | None


class _Extractor:
    """Extracts the members of one tar below `root_fd` (a fresh, private directory)."""

    def __init__(self, root_fd: int, form: WhiteoutForm, rootless: bool) -> None:
        self._root_fd = root_fd
        self._form = form
        self._rootless = rootless
        self._opaque_xattr = wh.USER_OPAQUE if rootless else wh.TRUSTED_OPAQUE
        self._nondirs: set[Parts] = set()
        self._dirs: dict[Parts, _DirMeta] = {}
        self._cache: tuple[Parts, int] | None = None
        self._name = ""

    # directories -------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._cache is not None:
            os.close(self._cache[1])
            self._cache = None

    def _walk(self, parts: Parts, *, create: bool) -> int:
        """A new fd for the directory `parts`, opened component by component with O_NOFOLLOW."""
        fd = os.dup(self._root_fd)
        try:
            for depth, component in enumerate(parts):
                next_fd = self._open_component(fd, component, parts[: depth + 1], create)
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_component(self, dir_fd: int, name: str, parts: Parts, create: bool) -> int:
        try:
            return os.open(name, O_DIR, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                what = "a symlink" if _is_symlink(dir_fd, name) else "not a directory"
                raise LayerError(f"{self._name!r}: parent {'/'.join(parts)!r} is {what}") from None
            raise
        os.mkdir(name, 0o700, dir_fd=dir_fd)
        fd = os.open(name, O_DIR, dir_fd=dir_fd)
        self._implicit_dir(fd, parts)
        return fd

    def _implicit_dir(self, fd: int, parts: Parts) -> None:
        """A parent the tar did not list: root-owned, mode 0755 (like docker)."""
        if self._rootless:
            set_xattr(fd, wh.OVERRIDE_STAT, wh.OverrideStat(0, 0, stat.S_IFDIR | _IMPLICIT_DIR_MODE).encode())
        self._dirs[parts] = _DirMeta(_IMPLICIT_DIR_MODE, None)

    def _parent(self, parts: Parts) -> int:
        """The (cached) fd of the directory holding entry `parts`; parents are created as needed."""
        parent = parts[:-1]
        if self._cache is not None and self._cache[0] == parent:
            return self._cache[1]
        fd = self._walk(parent, create=True)
        self.close()
        self._cache = (parent, fd)
        return fd

    # removal of earlier entries ----------------------------------------------------------------------------

    def _clear(self, parent_fd: int, parts: Parts, *, for_dir: bool) -> tuple[bool, bool]:
        """Make room for a new entry at `parts`: (an existing directory was kept, a whiteout was replaced)."""
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False, False
        if stat.S_ISDIR(st.st_mode):
            if for_dir:
                return True, False
            self._forget_tree(parts)
            shutil.rmtree(name, dir_fd=parent_fd)
            return False, False
        os.unlink(name, dir_fd=parent_fd)
        self._nondirs.discard(parts)
        return False, wh.is_chardev_whiteout(st.st_mode, st.st_rdev)

    def _forget_tree(self, parts: Parts) -> None:
        def inside(other: Parts) -> bool:
            return other[: len(parts)] == parts

        self._nondirs = {p for p in self._nondirs if not inside(p)}
        self._dirs = {p: m for p, m in self._dirs.items() if not inside(p)}
        if self._cache is not None and inside(self._cache[0]):
            self.close()

    # metadata ----------------------------------------------------------------------------------------------

    def _disk_mode(self, mode: int, *, is_dir: bool) -> int:
        if not self._rootless:
            return stat.S_IMODE(mode)
        return (mode & 0o777) | (0o700 if is_dir else 0o600)

    def _own(
        self, target: int | str, parent_fd: int, member: tarfile.TarInfo, file_type: int = 0, rdev: int = 0
    ) -> None:
        """Owner (chown, or the override record when rootless); `target` is an fd or a name in parent_fd."""
        if self._rootless:
            kind = file_type or _member_type(member)
            record = wh.OverrideStat(member.uid, member.gid, kind | stat.S_IMODE(member.mode), rdev)
            self._xattr(target, parent_fd, wh.OVERRIDE_STAT, record.encode(), lenient=False)
        elif isinstance(target, int):
            os.fchown(target, member.uid, member.gid)
        else:
            os.chown(target, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)

    def _xattr(self, target: int | str, parent_fd: int, name: str, value: bytes, *, lenient: bool) -> None:
        where = target if isinstance(target, int) else at_path(parent_fd, target)
        try:
            set_xattr(where, name, value)
        except OSError as exc:
            if not (lenient and self._rootless and exc.errno in _LENIENT_XATTR_ERRORS):
                raise LayerError(f"{self._name!r}: cannot set xattr {name}: {exc.strerror}") from None

    def _xattrs(self, target: int | str, parent_fd: int, member: tarfile.TarInfo) -> None:
        """The entry's xattrs, after its owner (a chown drops a file capability)."""
        for name, value in _tar_xattrs(member):
            if name == CAPABILITY:
                value = image_capability(value)
            if self._rootless and is_privileged(name):
                name = record_name(name)
            self._xattr(target, parent_fd, name, value, lenient=True)

    @staticmethod
    def _utime(target: int | str, parent_fd: int, member: tarfile.TarInfo) -> None:
        ns = _mtime_ns(member)
        if isinstance(target, int):
            os.utime(target, ns=(ns, ns))
        else:
            os.utime(target, ns=(ns, ns), dir_fd=parent_fd, follow_symlinks=False)

    # entries -----------------------------------------------------------------------------------------------

    def extract(self, tar: MemberData, member: tarfile.TarInfo) -> None:
        self._name = member.name
        parts = _split(member.name)
        if not parts:
            self._root(member)
            return
        for component in parts[:-1]:
            if component.startswith(wh.WH_PREFIX):
                raise LayerError(f"{member.name!r}: whiteout name {component!r} used as a directory")
        name = parts[-1]
        if name == wh.OPAQUE_MARKER:
            self._opaque(parts, member)
        elif name.startswith(wh.WH_PREFIX):
            target = wh.whited_out_target(name)
            if target is not None:  # else `.wh..wh.*` metadata of other tools: skipped
                self._whiteout((*parts[:-1], target), member)
        elif member.ischr() and member.devmajor == 0 and member.devminor == 0:
            self._whiteout(parts, member)
        elif member.isdir():
            self._dir(parts, member)
        elif member.islnk():
            self._hardlink(parts, member)
        else:
            self._nondir(tar, parts, member)

    def _root(self, member: tarfile.TarInfo) -> None:
        if not member.isdir():
            raise LayerError(f"{member.name!r}: the layer root must be a directory")
        self._own(self._root_fd, self._root_fd, member)
        self._xattrs(self._root_fd, self._root_fd, member)
        self._dirs[()] = _DirMeta(member.mode, _mtime_ns(member))

    def _dir(self, parts: Parts, member: tarfile.TarInfo) -> None:
        parent_fd = self._parent(parts)
        kept, was_whiteout = self._clear(parent_fd, parts, for_dir=True)
        if not kept:
            os.mkdir(parts[-1], 0o700, dir_fd=parent_fd)
        fd = os.open(parts[-1], O_DIR, dir_fd=parent_fd)
        try:
            self._own(fd, parent_fd, member)
            self._xattrs(fd, parent_fd, member)
            if was_whiteout:
                self._xattr(fd, parent_fd, self._opaque_xattr, wh.OPAQUE_VALUE, lenient=False)
        finally:
            os.close(fd)
        self._dirs[parts] = _DirMeta(member.mode, _mtime_ns(member))

    def _nondir(self, tar: MemberData, parts: Parts, member: tarfile.TarInfo) -> None:
        if not (member.isreg() or member.issym() or member.isfifo() or member.isdev()):
            raise LayerError(f"{member.name!r}: unsupported tar entry type {member.type!r}")
        parent_fd = self._parent(parts)
        self._clear(parent_fd, parts, for_dir=False)
        if member.isreg():
            self._regular(tar, parent_fd, parts[-1], member)
        elif member.issym():
            self._symlink(parent_fd, parts[-1], member)
        elif (member.ischr() or member.isblk()) and self._rootless:
            self._placeholder(parent_fd, parts[-1], member)
        else:
            self._special(parent_fd, parts[-1], member)
        self._nondirs.add(parts)

    def _regular(self, tar: MemberData, parent_fd: int, name: str, member: tarfile.TarInfo) -> None:
        fd = os.open(name, _O_NEW, 0o600, dir_fd=parent_fd)
        try:
            self._fill(tar, member, fd)
            self._own(fd, parent_fd, member)
            os.fchmod(fd, self._disk_mode(member.mode, is_dir=False))
            self._xattrs(fd, parent_fd, member)
            self._utime(fd, parent_fd, member)
        finally:
            os.close(fd)

    def _fill(self, tar: MemberData, member: tarfile.TarInfo, fd: int) -> None:
        _copy_member(tar, member, fd)

    def _symlink(self, parent_fd: int, name: str, member: tarfile.TarInfo) -> None:
        os.symlink(member.linkname, name, dir_fd=parent_fd)
        if not self._rootless:
            os.chown(name, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)
        self._xattrs(name, parent_fd, member)
        self._utime(name, parent_fd, member)

    def _special(self, parent_fd: int, name: str, member: tarfile.TarInfo) -> None:
        if member.isfifo():
            os.mkfifo(name, 0o600, dir_fd=parent_fd)
        else:
            file_type = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            device = os.makedev(member.devmajor, member.devminor)
            os.mknod(name, file_type | 0o600, device, dir_fd=parent_fd)
        if not self._rootless:
            os.chown(name, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)
        os.chmod(name, self._disk_mode(member.mode, is_dir=False), dir_fd=parent_fd, follow_symlinks=False)
        self._xattrs(name, parent_fd, member)
        self._utime(name, parent_fd, member)

    def _placeholder(self, parent_fd: int, name: str, member: tarfile.TarInfo) -> None:
        """Rootless: a device as an empty regular file carrying its type, owner, mode and number in xattrs."""
        fd = os.open(name, _O_NEW, 0o600, dir_fd=parent_fd)
        try:
            file_type = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            self._own(fd, parent_fd, member, file_type, os.makedev(member.devmajor, member.devminor))
            os.fchmod(fd, 0o600)
            self._xattrs(fd, parent_fd, member)
            self._utime(fd, parent_fd, member)
        finally:
            os.close(fd)

    def _hardlink(self, parts: Parts, member: tarfile.TarInfo) -> None:
        target = _split(member.linkname, member.name)
        if target == parts:
            raise LayerError(f"{member.name!r}: hard link to itself")
        parent_fd = self._parent(parts)
        self._clear(parent_fd, parts, for_dir=False)
        if target not in self._nondirs:
            raise LayerError(
                f"{member.name!r}: hard link target {member.linkname!r} is not an entry extracted before it"
            )
        target_fd = self._walk(target[:-1], create=False)
        try:
            os.link(target[-1], parts[-1], src_dir_fd=target_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
        finally:
            os.close(target_fd)
        self._nondirs.add(parts)

    # whiteouts ---------------------------------------------------------------------------------------------

    def _whiteout(self, hidden: Parts, member: tarfile.TarInfo) -> None:
        """A whiteout hiding `hidden` in the layers below, in the requested form."""
        if self._form == "file":
            self._marker_file((*hidden[:-1], wh.whiteout_name(hidden[-1])), member)
            return
        parent_fd = self._parent(hidden)
        name = hidden[-1]
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent_fd)
            self._utime(name, parent_fd, member)
            return
        if stat.S_ISDIR(st.st_mode):  # this layer's directory replaces the one below: make it opaque
            fd = os.open(name, O_DIR, dir_fd=parent_fd)
            try:
                self._xattr(fd, parent_fd, self._opaque_xattr, wh.OPAQUE_VALUE, lenient=False)
            finally:
                os.close(fd)

    def _opaque(self, parts: Parts, member: tarfile.TarInfo) -> None:
        if self._form == "file":
            self._marker_file(parts, member)
            return
        fd = self._walk(parts[:-1], create=True)
        try:
            self._xattr(fd, fd, self._opaque_xattr, wh.OPAQUE_VALUE, lenient=False)
        finally:
            os.close(fd)

    def _marker_file(self, parts: Parts, member: tarfile.TarInfo) -> None:
        parent_fd = self._parent(parts)
        self._clear(parent_fd, parts, for_dir=False)
        fd = os.open(parts[-1], _O_NEW, _MARKER_MODE, dir_fd=parent_fd)
        try:
            os.fchmod(fd, _MARKER_MODE)
            self._utime(fd, parent_fd, member)
        finally:
            os.close(fd)

    # the end -----------------------------------------------------------------------------------------------

    def finish(self, root_mode: int) -> None:
        """Apply directory modes and mtimes, deepest first (children no longer change them)."""
        self.close()
        if () not in self._dirs:
            self._dirs[()] = _DirMeta(root_mode, None)
            if self._rootless:
                set_xattr(
                    self._root_fd,
                    wh.OVERRIDE_STAT,
                    wh.OverrideStat(0, 0, stat.S_IFDIR | stat.S_IMODE(root_mode)).encode(),
                )
        for parts in sorted(self._dirs, key=len, reverse=True):
            meta = self._dirs[parts]
            fd = self._walk(parts, create=False)
            try:
                os.fchmod(fd, self._disk_mode(meta.mode, is_dir=True))
                if meta.mtime_ns is not None:
                    os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))
            finally:
                os.close(fd)


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _copy_member(tar: MemberData, member: tarfile.TarInfo, fd: int) -> None:
    data = tar.extractfile(member)
    if data is None:
        raise LayerError(f"{member.name!r}: no data")
    copied = 0
    while chunk := data.read(CHUNK):
        write_all(fd, chunk)
        copied += len(chunk)
    if copied != member.size:
        raise LayerError(f"{member.name!r}: truncated ({copied} of {member.size} bytes)")


def _extract_into(src: BinaryIO, root_fd: int, form: WhiteoutForm, rootless: bool, root_mode: int) -> None:
    try:
        with _open_tar(src) as tar:
            _extract_members(_Extractor(root_fd, form, rootless), tar, tar, root_mode)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise LayerError(f"unreadable layer tar: {exc}") from exc


def _extract_members(
    extractor: _Extractor, members: Iterable[tarfile.TarInfo], data: MemberData, root_mode: int
) -> None:
    try:
        for member in members:
            try:
                extractor.extract(data, member)
            except (OSError, ValueError) as exc:
                raise LayerError(f"{member.name!r}: {exc}") from exc
        extractor.finish(root_mode)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise LayerError(f"unreadable layer tar: {exc}") from exc
    finally:
        extractor.close()


def extract_layer_tar(
    src: BinaryIO,
    dest_dir: str,
    *,
    whiteout_form: WhiteoutForm,
    rootless: bool,
    sync: bool = True,
) -> None:
    """Extract the layer tar read from `src` into `dest_dir` (missing or empty); see the module docstring.

    `sync=False` skips the flush to disk before the final rename (for throwaway trees, e.g. in tests).
    """
    if whiteout_form not in ("chardev", "file"):
        raise ValueError(f"whiteout_form must be 'chardev' or 'file', not {whiteout_form!r}")
    new_dir(dest_dir, sync, lambda fd, mode: _extract_into(src, fd, whiteout_form, rootless, mode))


def extract_members(
    members: Iterable[tarfile.TarInfo],
    data: MemberData,
    dest_dir: str,
    extractor: Callable[[int], _Extractor],
    *,
    sync: bool = True,
) -> None:
    """Extract `members` (a tar's headers from elsewhere: a TOC) into `dest_dir` as extract_layer_tar does, with
    the extractor `extractor(root_fd)` makes (a subclass filling regular files its own way)."""
    new_dir(dest_dir, sync, lambda fd, mode: _extract_members(extractor(fd), members, data, mode))


def _member_type(member: tarfile.TarInfo) -> int:
    """The S_IFMT bits a tar member stands for (a hard link is a regular file)."""
    if member.isdir():
        return stat.S_IFDIR
    if member.issym():
        return stat.S_IFLNK
    if member.isfifo():
        return stat.S_IFIFO
    if member.ischr():
        return stat.S_IFCHR
    if member.isblk():
        return stat.S_IFBLK
    return stat.S_IFREG
