"""fd-relative filesystem helpers shared by the tar writer and the extractor (never follow a symlink)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import importlib
import os
from typing import Any

try:
    #: The optional `zstandard` module (None when not installed); typed Any as it ships no stubs.
    ZSTD: Any = importlib.import_module("zstandard")
except ImportError:  # pragma: no cover - depends on the environment
    ZSTD = None

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CHUNK = 1 << 20
_NO_XATTRS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA)


def at_path(dir_fd: int, name: str) -> str:
    """A path naming `name` inside the directory open as `dir_fd`, for calls that have no *at form.

    `/proc/self/fd/N` resolves to the directory we opened (with O_NOFOLLOW all the way), so the only
    component looked up by name is `name` itself; use it with `follow_symlinks=False`.
    """
    return f"/proc/self/fd/{dir_fd}/{name}"


def read_xattrs(target: int | str) -> dict[str, bytes]:
    """All xattrs of an open fd, or of a path without following a final symlink; {} when unsupported."""
    follow = isinstance(target, int)
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return {}
        raise
    values: dict[str, bytes] = {}
    for name in names:
        try:
            values[name] = os.getxattr(target, name, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno not in _NO_XATTRS:
                raise
    return values


def set_xattr(target: int | str, name: str, value: bytes) -> None:
    """Set one xattr on an open fd, or on a path without following a final symlink."""
    os.setxattr(target, name, value, follow_symlinks=isinstance(target, int))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def syncfs(fd: int) -> None:
    """Flush the filesystem holding `fd` (one syscall instead of an fsync per file)."""
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None
    if libc is None or not hasattr(libc, "syncfs"):
        os.sync()
        return
    if libc.syncfs(ctypes.c_int(fd)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
