"""Every change through the mount is seen by the next stat: the daemon's caches of resolved entries never serve
attributes older than the change (caches.py). The mount has timeout=0, so the kernel asks the daemon every time,
and what it answers is compared with the upper's own files after each operation."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fs.conftest import Mounter
from tests.support import write

Step = tuple[str, Callable[[Path], object]]


def shown(st: os.stat_result) -> tuple[object, ...]:
    nlink = None if stat.S_ISDIR(st.st_mode) else st.st_nlink  # (a merged directory shows 1)
    return (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns, nlink)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def fallocate(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.posix_fallocate(fd, 0, 70000)
    finally:
        os.close(fd)


def open_for_writing(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY))


STEPS: list[Step] = [
    ("copy-up by open", lambda m: open_for_writing(m / "lower-file")),
    ("write", lambda m: append(m / "lower-file", b"more\n")),
    ("write again", lambda m: append(m / "lower-file", b"and more\n")),
    ("truncate", lambda m: os.truncate(m / "lower-file", 3)),
    ("truncating open", lambda m: os.close(os.open(m / "lower-file", os.O_WRONLY | os.O_TRUNC))),
    ("fallocate", lambda m: fallocate(m / "lower-file")),
    ("chmod", lambda m: os.chmod(m / "dir" / "inner", 0o600)),
    ("chmod a directory", lambda m: os.chmod(m / "dir", 0o750)),
    ("chown", lambda m: os.chown(m / "dir" / "inner", 123, 456)),
    ("utime", lambda m: os.utime(m / "dir" / "inner", ns=(1_000_000_000, 2_000_000_000))),
    ("setxattr", lambda m: os.setxattr(m / "dir" / "inner", "user.k", b"v")),
    ("removexattr", lambda m: os.removexattr(m / "dir" / "inner", "user.k")),
    ("create", lambda m: (m / "dir" / "new").write_bytes(b"new\n")),
    ("link", lambda m: os.link(m / "dir" / "new", m / "dir" / "second")),
    ("link a lower file", lambda m: os.link(m / "dir" / "inner", m / "third")),
    ("unlink one name", lambda m: os.unlink(m / "dir" / "second")),
    ("rename a file", lambda m: os.rename(m / "dir" / "new", m / "moved")),
    ("rename over a file", lambda m: os.rename(m / "moved", m / "third")),
    ("mkdir", lambda m: os.mkdir(m / "dir" / "sub")),
    ("symlink", lambda m: os.symlink("target", m / "dir" / "sub" / "link")),
    ("mkfifo", lambda m: os.mkfifo(m / "dir" / "sub" / "fifo")),
    ("rename a directory", lambda m: os.rename(m / "dir" / "sub", m / "sub2")),
    ("rename a merged directory", lambda m: os.rename(m / "dir", m / "dir2")),
    ("unlink", lambda m: os.unlink(m / "sub2" / "fifo")),
    ("rmdir", lambda m: (os.unlink(m / "sub2" / "link"), os.rmdir(m / "sub2"))),
    ("chmod after all", lambda m: os.chmod(m / "dir2" / "inner", 0o644)),
]


def check_against_upper(mnt: Path, upper: Path, step: str) -> None:
    """Every entry the upper holds shows through the mount with the upper's own attributes."""
    for root, dirs, files in os.walk(upper):
        for name in dirs + files:
            on_disk = Path(root) / name
            if name.startswith(".wh.") or stat.S_ISCHR(os.lstat(on_disk).st_mode):
                continue  # whiteouts
            through = mnt / on_disk.relative_to(upper)
            assert shown(os.lstat(through)) == shown(os.lstat(on_disk)), f"after {step}: {through}"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown and the upper's own owners need root")
def test_stat_after_each_change_sees_it(tmp_path: Path, mounter: Mounter) -> None:
    lower, upper, work = tmp_path / "lower", tmp_path / "upper", tmp_path / "work"
    write(lower / "lower-file", b"lower data\n")
    write(lower / "dir" / "inner", b"inner\n")
    write(lower / "dir" / "other", b"other\n")
    upper.mkdir()
    work.mkdir()
    mnt = mounter([lower], upper, work, ["timeout=0"]).mountpoint
    for name, step in STEPS:
        for path in mnt.rglob("*"):  # the daemon resolves (and caches) every entry before the change
            os.lstat(path)
        step(mnt)
        check_against_upper(mnt, upper, name)
    assert sorted(p.name for p in mnt.iterdir()) == ["dir2", "lower-file", "third"]
