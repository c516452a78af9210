"""Copying a file's data and metadata between layers: the data (copy_file_range, in chunks), the xattrs a user set
(privileged ones as records where the writer may not set them), owners; and StagedCopy, a large file's data
copied by a worker thread while requests go on. No FUSE here.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from .privxattr import is_privileged, record_name, shown_xattrs
from .tree import Node
from .whiteout import OVERRIDE_STAT, is_internal_xattr

COPY_CHUNK = 1 << 30
#: Regular files at least this large have their data copied up by a worker thread (see StagedCopy).
THREADED_COPY_MIN = 4 << 20


def put_xattrs(found: dict[str, bytes], dst: str, *, records: bool = False) -> None:
    """Give dst the xattrs `found` on a source (layers.read_xattrs): those a user set and ownership records;
    union-internal ones stay behind. Privileged ones (`security.*`, `trusted.*`) go over as they show at the
    source (privxattr.py): as records when `records` (dst's writer may not set them), else under their own
    names."""
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


def copy_data(src_fd: int, dst_fd: int, size: int | None = None) -> None:
    """Copy src_fd's data to dst_fd from where each stands. `size`: what the source holds (a lower file, which
    does not change while mounted): once that much is copied, the call that would only find its end is spared."""
    copied = 0
    while True:
        try:
            n = os.copy_file_range(src_fd, dst_fd, COPY_CHUNK)
            copied += n
            if n == 0 or (size is not None and copied >= size):
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
