"""The operations the state machine applies, each run the same way in every target, and what is compared.

An operation returns an Outcome: ("ok", value) or ("err", "ENOENT"). Values hold only what must be equal
across implementations (see differences.py for what is left out and why).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
from collections.abc import Callable
from typing import Any

from tests.support import user_xattrs

Outcome = tuple[Any, ...]

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def outcome(func: Callable[[], Any]) -> Outcome:
    try:
        return ("ok", func())
    except OSError as exc:
        return ("err", errno.errorcode.get(exc.errno or 0, str(exc.errno)))


_fallocate = _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
#: the fallocate(2) modes FUSE passes on (COLLAPSE_RANGE and INSERT_RANGE it refuses: see differences.py)
FALLOCATE_MODES = {"plain": 0, "keep-size": 0x01, "punch-hole": 0x03, "zero-range": 0x10, "zero-range-keep": 0x11}


def fallocate(fd: int, mode: int, offset: int, length: int) -> int:
    """fallocate(2); returns the file's size after it."""
    if _fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return os.fstat(fd).st_size


def renameat2(src: str, dst: str, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, src.encode(), AT_FDCWD, dst.encode(), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def stat_fields(st: os.stat_result) -> tuple[Any, ...]:
    """The stat fields every implementation must agree on (not st_ino, st_dev, times, directory size/nlink)."""
    fields: tuple[Any, ...] = (stat.filemode(st.st_mode), st.st_uid, st.st_gid)
    if not stat.S_ISDIR(st.st_mode):
        fields += (st.st_size, st.st_nlink)
    return fields


# -- the operations: each takes absolute paths in one target ---------------------------------------------------

WRITE_FLAGS = {
    "trunc": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "append": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "excl": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    "rdwr": os.O_RDWR,
    "rdwr-creat": os.O_RDWR | os.O_CREAT,
}


def write_file(path: str, how: str, offset: int, data: bytes) -> tuple[int, int]:
    fd = os.open(path, WRITE_FLAGS[how] | os.O_NONBLOCK, 0o644)
    try:
        n = os.write(fd, data) if how == "append" else os.pwrite(fd, data, offset)
        return n, os.fstat(fd).st_size
    finally:
        os.close(fd)


def read_file(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


def lstat(path: str) -> tuple[Any, ...]:
    return stat_fields(os.lstat(path))


def listdir(path: str) -> list[str]:
    return sorted(os.listdir(path))


def mtime_of(path: str) -> int:
    return os.lstat(path).st_mtime_ns


#: one byte longer than any filesystem's names may be
LONG_NAME = "n" * 256
#: calls naming a path with a LONG_NAME in it (and `other`, an ordinary path): ENAMETOOLONG everywhere, unless
#: something before it in the path already fails
NAME_CALLS: dict[str, Callable[[str, str], Any]] = {
    "lstat": lambda path, _other: lstat(path),
    "unlink": lambda path, _other: os.unlink(path),
    "rmdir": lambda path, _other: os.rmdir(path),
    "chmod": lambda path, _other: os.chmod(path, 0o600),
    "truncate": lambda path, _other: os.truncate(path, 0),
    "mkdir": lambda path, _other: os.mkdir(path),
    "create": lambda path, _other: os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NONBLOCK, 0o644)),
    "link-to": lambda path, other: os.link(other, path, follow_symlinks=False),
    "rename-to": lambda path, other: os.rename(other, path),
    "rename-from": lambda path, other: os.rename(path, other),
}


ACL_NAMES = {"access": "system.posix_acl_access", "default": "system.posix_acl_default"}


def acl_value(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX ACL xattr value: (tag, permissions, id) entries, sorted as the kernel keeps them."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


_NO_ID = 0xFFFFFFFF
#: ACLs to set: `minimal` is a mode (the kernel stores none), the others name users and groups
ACLS = {
    "minimal": acl_value((0x01, 6, _NO_ID), (0x04, 4, _NO_ID), (0x20, 0, _NO_ID)),
    "user": acl_value((0x01, 7, _NO_ID), (0x02, 7, 1234), (0x04, 5, _NO_ID), (0x10, 7, _NO_ID), (0x20, 5, _NO_ID)),
    "group": acl_value((0x01, 6, _NO_ID), (0x04, 0, _NO_ID), (0x08, 6, 2345), (0x10, 4, _NO_ID), (0x20, 0, _NO_ID)),
}


def acls(path: str) -> tuple[Any, ...]:
    """A path's ACLs (access, default) as the kernel gives them: the value, or the errno."""
    return tuple(
        outcome(lambda name=name: os.getxattr(path, name, follow_symlinks=False)) for name in ACL_NAMES.values()
    )


# -- snapshots -------------------------------------------------------------------------------------------------


def describe(path: str, st: os.stat_result, kept_before_ns: int) -> tuple[Any, ...]:
    mode = st.st_mode
    desc: tuple[Any, ...] = (*stat_fields(st), user_xattrs(path), acls(path))
    if stat.S_ISFIFO(mode):
        desc += ("fifo: mtime not compared",)  # see "fifo st_mtime" in differences.py
    elif not stat.S_ISDIR(mode):
        # only times set explicitly (by the layers or utime) are compared; fresh ones differ by microseconds
        desc += (st.st_mtime_ns if st.st_mtime_ns < kept_before_ns else "recent",)
    if stat.S_ISREG(mode):
        with open(path, "rb") as f:
            desc += (f.read(),)
    elif stat.S_ISLNK(mode):
        desc += (os.readlink(path),)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        desc += (st.st_rdev,)
    return desc


def snapshot(root: str, kept_before_ns: int, *, check_inodes: bool = False) -> dict[str, tuple[Any, ...]]:
    """Every entry below root, symlinks not followed. With check_inodes, also require readdir's d_ino to be
    the st_ino of the entry (a promise of ours, ARCHITECTURE section 3)."""
    result: dict[str, tuple[Any, ...]] = {}

    def walk(rel: str) -> None:
        here = os.path.join(root, rel) if rel else root
        with os.scandir(here) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = os.path.join(here, entry.name)
            st = os.lstat(path)
            key = os.path.join(rel, entry.name) if rel else entry.name
            if check_inodes:
                assert entry.inode() == st.st_ino, f"{key}: readdir says inode {entry.inode()}, stat {st.st_ino}"
            result[key] = describe(path, st, kept_before_ns)
            if stat.S_ISDIR(st.st_mode):
                walk(key)

    walk("")
    return result


def diff(expected: dict[str, tuple[Any, ...]], got: dict[str, tuple[Any, ...]]) -> list[str]:
    lines = []
    for key in sorted(set(expected) | set(got)):
        if expected.get(key) != got.get(key):
            lines.append(f"  {key}: expected {expected.get(key, 'absent')!r}, got {got.get(key, 'absent')!r}")
    return lines
