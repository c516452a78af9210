"""Layer directory -> deterministic OCI layer tar, and deterministic zstd compression (gzip: gzipped.py).

The tar (`write_layer_tar`) is a pure function of the layer's names, contents and metadata (and the clamp):
- PAX format; names relative without `./`, directories with a trailing `/`; no layer-root entry.
- Order: depth first, the entries of each directory sorted by their tar name in byte order, so a directory's
  contents follow it directly. An opaque directory's `.wh..wh..opq` comes right after the directory entry.
- Numeric uid/gid, empty uname/gname, no atime/ctime. The mtime is the entry's own, in whole seconds (the
  ustar field, no PAX `mtime` record: docker's choice), and with a clamp (SOURCE_DATE_EPOCH) min(mtime, clamp):
  only what is newer than the epoch is moved back to it, so a base image's files keep their times.
  `settle_mtimes` gives a layer directory exactly these mtimes, so the directory a store mounts and the tar it
  ships (and every directory extracted from that tar) show the same times, to the nanosecond.
- The second and later names of a hard-linked file (in that order) are tar hard links to the first.
- Symlinks, fifos, char and block devices as such; sockets are skipped.
- xattrs as `SCHILY.xattr.*` PAX records, sorted, internal ones (`whiteouts.is_kept_out`) dropped.
  A rootless layer keeps `security.*` and `trusted.*` xattrs as `user.containers.override_NAME` records
  (unionfs.privxattr): they are written under NAME. `security.capability` is written in the image's form: v2,
  where a v3 names the image's root (uid 0, or `host_owner`'s uid); a v3 for another root keeps its uid.
- `user.containers.override_stat` replaces the on-disk owner and mode; a placeholder regular file whose record
  names a device or fifo is written as that device or fifo (device number from `user.unionfs.rdev`).
- Whiteouts in either form become an empty regular `.wh.NAME` (mode 0644, owner 0:0, the whiteout's mtime);
  the opaque marker is an empty regular file (mode 0644, owner 0:0, the directory's mtime). Both forms of the
  same layer therefore give the same bytes.

The walk uses directory fds only: every entry is looked up relative to its parent's fd with O_NOFOLLOW, and
symlinks found in the layer are recorded, never followed.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, BinaryIO, Protocol

from imagebuild.layer import whiteouts as wh
from imagebuild.layer._fs import CHUNK, O_DIR, ZSTD, at_path, read_xattrs
from imagebuild.layer.errors import LayerError
from unionfs import CAPABILITY, image_capability, shown_xattrs

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

ZSTD_AVAILABLE = ZSTD is not None
ZSTD_LEVEL = 3
_MARKER_MODE = 0o644
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class _Meta:
    """The metadata a tar header gets: on-disk stat with the override record applied."""

    mode: int  # file type and permission bits
    uid: int
    gid: int
    rdev: int


@dataclass(frozen=True)
class _Child:
    tar_name: str
    disk_name: str
    st: os.stat_result
    xattrs: dict[str, bytes]
    whiteout: bool


def tar_mtime(mtime_ns: int, clamp: int | None) -> int:
    """The whole-second mtime a layer tar carries for an entry whose mtime is `mtime_ns`."""
    mtime = mtime_ns // 1_000_000_000
    return mtime if clamp is None else min(mtime, clamp)


class _Sink(Protocol):
    def addfile(self, tarinfo: tarfile.TarInfo, fileobj: IO[bytes] | None = None) -> None: ...


def _effective(path: str, st: os.stat_result, xattrs: dict[str, bytes], host_owner: tuple[int, int] | None) -> _Meta:
    raw = xattrs.get(wh.OVERRIDE_STAT)
    if raw is None:
        uid, gid = st.st_uid, st.st_gid
        if host_owner is not None:
            uid = 0 if uid == host_owner[0] else uid
            gid = 0 if gid == host_owner[1] else gid
        return _Meta(st.st_mode, uid, gid, st.st_rdev)
    try:
        record = wh.parse_override_stat(raw)
    except ValueError as exc:
        raise LayerError(f"{path}: {exc}") from None
    file_type = stat.S_IFMT(st.st_mode)
    rdev = st.st_rdev
    if record.file_type in wh.SPECIAL_TYPES and stat.S_ISREG(st.st_mode):
        file_type = record.file_type  # a placeholder file standing for a device or fifo
        rdev = record.rdev
    return _Meta(file_type | stat.S_IMODE(record.mode), record.uid, record.gid, rdev)


def _pax_xattrs(path: str, xattrs: dict[str, bytes], host_owner: tuple[int, int] | None) -> dict[str, str]:
    records: dict[str, str] = {}
    shown = shown_xattrs(xattrs)
    for name in sorted(shown, key=os.fsencode):
        if wh.is_kept_out(name):
            continue
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise LayerError(f"{path}: xattr name {name!r} is not UTF-8") from None
        value = shown[name]
        if name == CAPABILITY:
            value = image_capability(value, None if host_owner is None else _image_uid(host_owner[0]))
        records["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return records


def _image_uid(host_uid: int) -> Callable[[int], int]:
    """Rootless: the building user's uid is the image's root."""
    return lambda uid: 0 if uid == host_uid else uid


class _Writer:
    """Writes one layer directory into an open TarFile (see the module docstring for the format)."""

    def __init__(self, tar: _Sink, clamp: int | None, host_owner: tuple[int, int] | None) -> None:
        self._tar = tar
        self._clamp = clamp
        self._host_owner = host_owner
        self._links: dict[tuple[int, int], str] = {}

    def write_root(self, root_fd: int) -> None:
        st = os.fstat(root_fd)
        self._write_children(root_fd, "", wh.is_opaque_xattrs(read_xattrs(root_fd)), st)

    def _header(self, path: str, kind: bytes, meta: _Meta, st: os.stat_result) -> tarfile.TarInfo:
        info = tarfile.TarInfo(path)
        info.type = kind
        info.mode = stat.S_IMODE(meta.mode)
        info.uid, info.gid = meta.uid, meta.gid
        info.uname = info.gname = ""
        info.mtime = tar_mtime(st.st_mtime_ns, self._clamp)
        return info

    def _marker(self, path: str, st: os.stat_result) -> None:
        """An empty regular file for a whiteout or the opaque marker (normalised metadata)."""
        info = self._header(path, tarfile.REGTYPE, _Meta(stat.S_IFREG | _MARKER_MODE, 0, 0, 0), st)
        self._tar.addfile(info)

    def _list(self, dir_fd: int) -> tuple[list[_Child], bool]:
        with os.scandir(dir_fd) as entries:
            names = sorted((entry.name for entry in entries), key=os.fsencode)
        children: dict[str, _Child] = {}
        has_marker = False
        for name in names:
            if name == wh.OPAQUE_MARKER:
                has_marker = True
                continue
            if wh.is_reserved_name(name) and wh.whited_out_target(name) is None:
                continue  # `.wh..wh.*`: reserved for other tools' metadata (aufs), never content
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISSOCK(st.st_mode):
                continue
            child = self._classify(dir_fd, name, st)
            # A chardev `x` and a file `.wh.x` are one whiteout: the first name in byte order speaks for both.
            children.setdefault(child.tar_name, child)
        ordered = sorted(children.values(), key=lambda c: os.fsencode(c.tar_name))
        return ordered, has_marker

    @staticmethod
    def _classify(dir_fd: int, name: str, st: os.stat_result) -> _Child:
        xattrs = read_xattrs(at_path(dir_fd, name))
        if wh.whited_out_target(name) is not None:
            return _Child(name, name, st, xattrs, whiteout=True)
        if wh.is_chardev_whiteout(st.st_mode, st.st_rdev):
            return _Child(wh.whiteout_name(name), name, st, xattrs, whiteout=True)
        return _Child(name, name, st, xattrs, whiteout=False)

    def _write_children(self, dir_fd: int, prefix: str, opaque: bool, dir_st: os.stat_result) -> None:
        children, has_marker = self._list(dir_fd)
        if opaque or has_marker:
            self._marker(prefix + wh.OPAQUE_MARKER, dir_st)
        for child in children:
            path = prefix + child.tar_name
            try:
                self._write_child(dir_fd, path, child)
            except LayerError:
                raise
            except (OSError, ValueError) as exc:
                raise LayerError(f"{path}: {exc}") from exc

    def _write_child(self, dir_fd: int, path: str, child: _Child) -> None:
        if child.whiteout:
            self._marker(path, child.st)
            return
        meta = _effective(path, child.st, child.xattrs, self._host_owner)
        if stat.S_ISDIR(meta.mode):
            self._write_dir(dir_fd, path, child, meta)
            return
        key = (child.st.st_dev, child.st.st_ino)
        first = self._links.get(key) if child.st.st_nlink > 1 else None
        if first is not None:
            info = self._header(path, tarfile.LNKTYPE, meta, child.st)
            info.linkname = first
            self._tar.addfile(info)
            return
        self._write_nondir(dir_fd, path, child, meta)
        if child.st.st_nlink > 1:
            self._links[key] = path

    def _write_dir(self, dir_fd: int, path: str, child: _Child, meta: _Meta) -> None:
        fd = _open_same(dir_fd, child, O_DIR, path)
        try:
            info = self._header(path, tarfile.DIRTYPE, meta, child.st)
            info.pax_headers = _pax_xattrs(path, child.xattrs, self._host_owner)
            self._tar.addfile(info)
            self._write_children(fd, path + "/", wh.is_opaque_xattrs(child.xattrs), child.st)
        finally:
            os.close(fd)

    def _write_nondir(self, dir_fd: int, path: str, child: _Child, meta: _Meta) -> None:
        kind = _tar_type(meta.mode, path)
        info = self._header(path, kind, meta, child.st)
        info.pax_headers = _pax_xattrs(path, child.xattrs, self._host_owner)
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = os.major(meta.rdev), os.minor(meta.rdev)
        if kind == tarfile.SYMTYPE:
            info.linkname = os.readlink(child.disk_name, dir_fd=dir_fd)
        if kind != tarfile.REGTYPE:
            self._tar.addfile(info)
            return
        fd = _open_same(dir_fd, child, _O_FILE, path)
        with os.fdopen(fd, "rb") as data:
            info.size = os.fstat(fd).st_size
            self._tar.addfile(info, data)


def _tar_type(mode: int, path: str) -> bytes:
    kinds = {
        stat.S_IFREG: tarfile.REGTYPE,
        stat.S_IFLNK: tarfile.SYMTYPE,
        stat.S_IFIFO: tarfile.FIFOTYPE,
        stat.S_IFCHR: tarfile.CHRTYPE,
        stat.S_IFBLK: tarfile.BLKTYPE,
    }
    kind = kinds.get(stat.S_IFMT(mode))
    if kind is None:
        raise LayerError(f"{path}: unsupported file type {stat.S_IFMT(mode):o}")
    return kind


def _open_same(dir_fd: int, child: _Child, flags: int, path: str) -> int:
    """Open `child` relative to `dir_fd` (O_NOFOLLOW) and make sure it is still the entry we listed."""
    try:
        fd = os.open(child.disk_name, flags, dir_fd=dir_fd)
    except OSError as exc:
        raise LayerError(f"{path}: changed while the layer was read ({exc.strerror})") from None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (child.st.st_dev, child.st.st_ino) or stat.S_IFMT(st.st_mode) != stat.S_IFMT(
        child.st.st_mode
    ):
        os.close(fd)
        raise LayerError(f"{path}: changed while the layer was read")
    return fd


def write_layer_tar(
    layer_dir: str, out: BinaryIO, *, mtime_clamp: int | None, host_owner: tuple[int, int] | None = None
) -> None:
    """Write the deterministic, uncompressed layer tar of `layer_dir` to `out` (see the module docstring).

    `host_owner` is for rootless layers: entries without an override record (symlinks and fifos, which can
    carry no user xattrs) owned by this uid / gid on disk are written as owned by 0 / 0.
    """
    root_fd = os.open(layer_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with tarfile.open(
            fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape"
        ) as tar:
            _Writer(tar, mtime_clamp, host_owner).write_root(root_fd)
    finally:
        os.close(root_fd)


class _Headers:
    """A sink that keeps the headers it is given and reads no data."""

    def __init__(self) -> None:
        self.headers: list[tarfile.TarInfo] = []

    def addfile(self, tarinfo: tarfile.TarInfo, fileobj: IO[bytes] | None = None) -> None:  # noqa: ARG002 (_Sink's, i.e. TarFile's, signature)
        self.headers.append(tarinfo)


class _Lister(_Writer):
    """The writer's walk, keeping each entry's exact mtime (ns) instead of the tar's whole seconds."""

    def __init__(self, sink: _Headers, host_owner: tuple[int, int] | None) -> None:
        super().__init__(sink, None, host_owner)
        self.mtimes_ns: dict[str, int] = {}

    def _header(self, path: str, kind: bytes, meta: _Meta, st: os.stat_result) -> tarfile.TarInfo:
        self.mtimes_ns[path] = st.st_mtime_ns
        return super()._header(path, kind, meta, st)


def layer_headers(layer_dir: str, *, host_owner: tuple[int, int] | None = None) -> list[tuple[tarfile.TarInfo, int]]:
    """The headers `write_layer_tar` would write for `layer_dir` (unclamped), in its order, each with the entry's
    exact mtime in ns: what a mount of the directory shows, owners and modes from the ownership records."""
    sink = _Headers()
    lister = _Lister(sink, host_owner)
    root_fd = os.open(layer_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        lister.write_root(root_fd)
    finally:
        os.close(root_fd)
    return [(info, lister.mtimes_ns[info.name]) for info in sink.headers]


def settle_mtimes(layer_dir: str, clamp: int | None) -> None:
    """Give every entry below `layer_dir` the mtime its layer tar carries (`tar_mtime`): whole seconds, and no
    later than `clamp`. Then the directory and its tar agree exactly, as a directory extracted from it does.
    Symlinks are changed themselves (lutimes), never followed; the root, which has no tar entry, is left."""
    root_fd = os.open(layer_dir, O_DIR)
    try:
        _settle_below(root_fd, clamp)
    finally:
        os.close(root_fd)


def _settle_below(dir_fd: int, clamp: int | None) -> None:
    with os.scandir(dir_fd) as entries:
        names = [entry.name for entry in entries]
    for name in names:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        wanted = tar_mtime(st.st_mtime_ns, clamp) * 1_000_000_000
        if st.st_mtime_ns != wanted:
            os.utime(name, ns=(st.st_atime_ns, wanted), dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(name, O_DIR, dir_fd=dir_fd)
            try:
                _settle_below(fd, clamp)
            finally:
                os.close(fd)


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes (sha256) and counts what passes, forwarding it to `sink` if any."""

    def __init__(self, sink: BinaryIO | None = None) -> None:
        super().__init__()
        self._sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data).cast("B")
        self.hash.update(view)
        self.size += len(view)
        if self._sink is not None:
            self._sink.write(view)
        return len(view)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def layer_digests(
    layer_dir: str, mtime_clamp: int | None = None, *, host_owner: tuple[int, int] | None = None
) -> tuple[str, int]:
    """The diff_id (sha256 of the uncompressed layer tar) and the tar's size, without storing the tar."""
    sink = _HashingWriter()
    with io.BufferedWriter(sink, CHUNK) as buffered:
        write_layer_tar(layer_dir, buffered, mtime_clamp=mtime_clamp, host_owner=host_owner)
        buffered.flush()
        return sink.digest, sink.size


def compress_zstd(src: BinaryIO, dst: BinaryIO, *, level: int = ZSTD_LEVEL) -> tuple[str, int]:
    """Zstd-compress `src` into `dst` (single-threaded, fixed level, checksummed): digest and size out.

    LayerError when the optional `zstandard` module is not installed (see ZSTD_AVAILABLE).
    """
    if ZSTD is None:
        raise LayerError("zstd compression needs the 'zstandard' module, which is not installed")
    tee = _HashingWriter(dst)
    compressor = ZSTD.ZstdCompressor(level=level, write_checksum=True, threads=0)
    compressor.copy_stream(src, tee, read_size=CHUNK, write_size=CHUNK)
    return tee.digest, tee.size
