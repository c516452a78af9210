"""Writing what COPY and ADD copy into a fresh layer directory, each entry with the metadata docker gives it.

As root the layer holds real owners and modes. As an ordinary user every file and directory says whose it is
in `user.containers.override_stat` (the form unionfs and the tar writer read), and stays the user's on disk with
mode |0600 (|0700 for directories) so the store can read it; symlinks cannot carry the record and are the
image's root's. Directory metadata is applied last, deepest first, so that a directory made read-only (a
`--chmod`, or an image directory that is) is still filled first.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from dataclasses import dataclass

from imagebuild.builder.copydest import Directory
from imagebuild.layer.whiteouts import OVERRIDE_STAT, is_kept_out, parse_override_stat
from unionfs import OverrideStat

_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_XATTRS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA, errno.EPERM, errno.EACCES)
NEW_DIR_MODE = 0o755


@dataclass(frozen=True)
class Meta:
    mode: int  # permission bits (07777)
    uid: int
    gid: int
    mtime_ns: int | None = None  # None: leave the time the entry was made


class LayerWriter:
    def __init__(self, layer: str) -> None:
        self.layer = layer
        self.rootless = os.geteuid() != 0
        self._dirs: dict[str, Meta] = {}

    def disk(self, path: str) -> str:
        """The layer's file for an absolute image path."""
        return os.path.join(self.layer, path.lstrip("/"))

    def _clear(self, disk: str, *, keep_dir: bool) -> None:
        """Make room at `disk` for a new entry (a directory stays when a directory is wanted)."""
        if not os.path.lexists(disk):
            return
        if os.path.isdir(disk) and not os.path.islink(disk):
            if keep_dir:
                return
            shutil.rmtree(disk)
            self._dirs = {p: m for p, m in self._dirs.items() if not self.disk(p).startswith(disk + "/")}
        else:
            os.unlink(disk)

    def prepare(self, directories: list[Directory], owner: tuple[int, int]) -> None:
        """The directories on the way to the destination: the image's keep their metadata; new ones are 0755."""
        for directory in directories:
            node = directory.node
            if node is None:
                self.directory(directory.path, Meta(NEW_DIR_MODE, *owner))
            else:
                self.directory(directory.path, Meta(stat.S_IMODE(node.mode), node.uid, node.gid, node.mtime_ns))

    def directory(self, path: str, meta: Meta) -> None:
        disk = self.disk(path)
        self._clear(disk, keep_dir=True)
        if not os.path.isdir(disk):
            os.mkdir(disk, 0o700)
        self._dirs[path] = meta

    def file(self, path: str, source_fd: int, meta: Meta) -> None:
        """A regular file with the data (and xattrs) of an open source file."""
        disk = self.disk(path)
        self._clear(disk, keep_dir=False)
        out = os.open(disk, _O_NEW, 0o600)
        try:
            _copy_data(source_fd, out)
            self._copy_xattrs(source_fd, out)
        finally:
            os.close(out)
        self._apply(disk, stat.S_IFREG, meta)

    def text(self, path: str, body: bytes, meta: Meta) -> None:
        disk = self.disk(path)
        self._clear(disk, keep_dir=False)
        with open(disk, "xb") as f:
            f.write(body)
        self._apply(disk, stat.S_IFREG, meta)

    def symlink(self, path: str, target: str, owner: tuple[int, int], mtime_ns: int | None) -> None:
        disk = self.disk(path)
        self._clear(disk, keep_dir=False)
        os.symlink(target, disk)
        if not self.rootless:
            os.lchown(disk, *owner)
        if mtime_ns is not None:
            os.utime(disk, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def own(self, path: str, owner: tuple[int, int]) -> None:
        """Give an entry already in the layer (ADD's extracted archives) and everything below it to `owner`."""
        top = self.disk(path)
        for disk in [top, *(os.path.join(d, n) for d, dirs, files in os.walk(top) for n in dirs + files)]:
            st = os.lstat(disk)
            if stat.S_ISLNK(st.st_mode):
                if not self.rootless:
                    os.lchown(disk, *owner)
            elif self.rootless:
                if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                    mode = stat.S_IMODE(st.st_mode)
                    with contextlib.suppress(OSError, ValueError):
                        mode = stat.S_IMODE(parse_override_stat(os.getxattr(disk, OVERRIDE_STAT)).mode)
                    record = OverrideStat(owner[0], owner[1], stat.S_IFMT(st.st_mode) | mode)
                    os.setxattr(disk, OVERRIDE_STAT, record.encode())
            else:
                os.lchown(disk, *owner)
                os.chmod(disk, stat.S_IMODE(st.st_mode))  # chown drops setuid and setgid: keep them

    def finish(self) -> None:
        """Apply every directory's metadata, deepest first."""
        for path in sorted(self._dirs, key=lambda p: p.count("/"), reverse=True):
            self._apply(self.disk(path), stat.S_IFDIR, self._dirs[path])

    def _apply(self, disk: str, kind: int, meta: Meta) -> None:
        if self.rootless:
            os.chmod(disk, (meta.mode & 0o777) | (0o700 if kind == stat.S_IFDIR else 0o600))
            os.setxattr(disk, OVERRIDE_STAT, OverrideStat(meta.uid, meta.gid, kind | meta.mode).encode())
        else:
            with contextlib.suppress(OSError):
                os.removexattr(disk, OVERRIDE_STAT)
            os.lchown(disk, meta.uid, meta.gid)
            os.chmod(disk, meta.mode)  # after chown, which drops setuid and setgid
        if meta.mtime_ns is not None:
            os.utime(disk, ns=(meta.mtime_ns, meta.mtime_ns))

    @staticmethod
    def _copy_xattrs(source_fd: int, out: int) -> None:
        try:
            names = os.listxattr(source_fd)
        except OSError as exc:
            if exc.errno in _NO_XATTRS:
                return
            raise
        for name in names:
            if is_kept_out(name):
                continue
            try:
                os.setxattr(out, name, os.getxattr(source_fd, name))
            except OSError as exc:
                if exc.errno not in _NO_XATTRS:
                    raise


def _copy_data(source_fd: int, out: int) -> None:
    """All of a file's data: copy_file_range where the filesystems allow it, else read and write."""
    try:
        while os.copy_file_range(source_fd, out, 1 << 30):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
    os.lseek(source_fd, 0, os.SEEK_SET)
    os.lseek(out, 0, os.SEEK_SET)
    os.ftruncate(out, 0)
    while chunk := os.read(source_fd, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(out, view) :]
