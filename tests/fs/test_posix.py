"""The POSIX surface programs rely on, on a union mount, and real tools at work on one."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.fs.conftest import Mounter
from tests.support import snapshot, write


@pytest.fixture
def m(mounter: Mounter, tmp_path: Path) -> Path:
    lower, up, work = tmp_path / "lower", tmp_path / "up", tmp_path / "work"
    for d in (lower, up, work):
        d.mkdir()
    write(lower / "file", "lower data\n")
    write(lower / "dir" / "inner", "x")
    return mounter([lower], up, work).mountpoint


def make_wheel(dest: Path, package: str, source: str) -> Path:
    """A minimal pure-Python wheel, so pip installs it with no index and no build step."""
    dest.mkdir(parents=True)
    name = package.replace("_", "-")
    wheel = dest / f"{package}-1.0-py3-none-any.whl"
    info = f"{package}-1.0.dist-info"
    files = {
        f"{package}/__init__.py": source,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(wheel, "w") as z:
        for arcname, text in files.items():
            z.writestr(arcname, text)
        z.writestr(f"{info}/RECORD", "".join(f"{a},,\n" for a in files) + f"{info}/RECORD,,\n")
    return wheel


def expect_errno(err: int, func, *args) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        func(*args)
    assert info.value.errno == err, info.value


def test_special_files_and_open_flags(m: Path) -> None:
    os.mkfifo(m / "fifo")
    assert stat.S_ISFIFO(os.stat(m / "fifo").st_mode)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(m / "sock"))
        assert stat.S_ISSOCK(os.stat(m / "sock").st_mode)
    finally:
        sock.close()
    expect_errno(errno.EEXIST, os.open, m / "file", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    fd = os.open(m / "file", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"appended\n")
    os.close(fd)
    assert (m / "file").read_text() == "lower data\nappended\n"
    fd = os.open(m / "file", os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert (m / "file").read_bytes() == b""
    expect_errno(errno.ENOENT, os.open, m / "missing", os.O_RDONLY)
    expect_errno(errno.EISDIR, os.open, m / "dir", os.O_WRONLY)
    expect_errno(errno.ENOTDIR, os.listdir, m / "file")


def test_writes_of_every_size_land_where_they_were_aimed(m: Path, tmp_path: Path) -> None:
    # Large writes reach the daemon in requests of up to 1 MiB, small ones in one; a patched pyfuse3 has libfuse
    # write them to the upper file itself. Either way each byte must land at its offset, in a copied-up file too.
    rng = random.Random(8)
    model = bytearray(b"lower data\n")
    fd = os.open(m / "file", os.O_RDWR)
    try:
        for size in (1, 4095, 4096, 4097, 65536, 131072 + 5, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20):
            off = rng.randrange(len(model) + 8192)  # sometimes past the end, leaving a hole
            data = rng.randbytes(size)
            assert os.pwrite(fd, data, off) == size
            model[len(model) : off] = bytes(max(0, off - len(model)))
            model[off : off + size] = data
        appender = os.open(m / "file", os.O_WRONLY | os.O_APPEND)
        try:
            tail = rng.randbytes(200_000)
            assert os.write(appender, tail) == len(tail)
            model += tail
        finally:
            os.close(appender)
        assert os.fstat(fd).st_size == len(model)
        assert os.pread(fd, len(model) + 1, 0) == bytes(model)
    finally:
        os.close(fd)
    assert (m / "file").read_bytes() == bytes(model)
    assert (tmp_path / "up" / "file").read_bytes() == bytes(model)  # in the upper, not only in the page cache


def test_reads_of_every_size_return_what_lies_at_their_offset(mounter: Mounter, tmp_path: Path) -> None:
    # Reads through the page cache reach the daemon as readahead of up to 128 KiB; O_DIRECT ones at the caller's
    # own offsets and sizes. A patched pyfuse3 has libfuse splice the data from the file into the reply.
    rng = random.Random(9)
    data = rng.randbytes((3 << 20) + 123)
    write(tmp_path / "lower" / "big", data)
    write(tmp_path / "lower" / "other", "other lower data\n")
    (tmp_path / "up").mkdir()
    (tmp_path / "work").mkdir()
    m = mounter([tmp_path / "lower"], tmp_path / "up", tmp_path / "work").mountpoint
    assert (m / "big").read_bytes() == data
    fd = os.open(m / "big", os.O_RDONLY | os.O_DIRECT)
    try:
        for size in (1, 4095, 4096, 65536 + 3, 131072, (1 << 20) + 7, 4 << 20):
            off = rng.randrange(len(data) + 10)  # some past the end: a short read, or none
            assert os.pread(fd, size, off) == data[off : off + size], (size, off)
        assert os.pread(fd, 10, len(data) + 4096) == b""
    finally:
        os.close(fd)
    # A handle opened on the lower file reads the upper copy once another writes to the file.
    reader = os.open(m / "other", os.O_RDONLY | os.O_DIRECT)
    try:
        assert os.pread(reader, 100, 0) == b"other lower data\n"
        with open(m / "other", "r+b") as f:
            f.write(b"OTHER")
        assert os.pread(reader, 100, 0) == b"OTHER lower data\n"
    finally:
        os.close(reader)


def test_what_a_write_only_handle_writes_every_other_handle_reads(m: Path) -> None:
    # Write-only handles bypass the mount's page cache; pages other handles cached must not outlive the write.
    reader = os.open(m / "file", os.O_RDONLY)
    mapper = os.open(m / "file", os.O_RDONLY)
    try:
        assert os.pread(reader, 100, 0) == b"lower data\n"  # now in the page cache
        mapped = mmap.mmap(mapper, 0, mmap.MAP_SHARED, mmap.PROT_READ)
        assert mapped[:5] == b"lower"
        writer = os.open(m / "file", os.O_WRONLY)
        try:
            assert os.pwrite(writer, b"LOWER", 0) == 5
            assert os.pread(reader, 100, 0) == b"LOWER data\n"
            assert mapped[:5] == b"LOWER"
        finally:
            os.close(writer)
        mapped.close()
        appender = os.open(m / "file", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(appender, b"more\n")
        finally:
            os.close(appender)
        assert os.fstat(reader).st_size == len(b"LOWER data\nmore\n")
        assert os.pread(reader, 100, 0) == b"LOWER data\nmore\n"
    finally:
        os.close(reader)
        os.close(mapper)
    assert (m / "file").read_bytes() == b"LOWER data\nmore\n"


def test_a_write_through_any_handle_strips_setuid_and_capabilities(mounter: Mounter, tmp_path: Path) -> None:
    # The kernel strips these itself only for writes through the page cache: write-only handles, which write
    # directly, must not leave them on a file whose content changed.
    if os.geteuid() != 0:
        pytest.skip("needs root: another user writes, and only root sets file capabilities")
    for d in ("lower", "up", "work"):
        (tmp_path / d).mkdir()
    m = mounter([tmp_path / "lower"], tmp_path / "up", tmp_path / "work", options=["allow_other"]).mountpoint
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "echo", "x"]
    capability = (0x02000000).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)  # cap_net_raw
    for name, flags in (("write-only", os.O_WRONLY), ("read-write", os.O_RDWR)):
        path = m / name
        path.write_text("data\n")
        os.chmod(path, 0o6777)
        fd = os.open(path, flags | os.O_APPEND)
        try:
            # a user without CAP_FSETID writes through the handle: setuid and setgid go
            done = subprocess.run(nobody, stdout=fd, stderr=subprocess.PIPE, text=True)
            assert done.returncode == 0, done.stderr
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o777, name
            # file capabilities go on any write, root's too
            os.setxattr(path, "security.capability", capability)
            os.write(fd, b"y\n")
            assert "security.capability" not in os.listxattr(path), name
        finally:
            os.close(fd)
        assert path.read_text() == "data\nx\ny\n"


def test_fallocate_copy_file_range_and_sync(m: Path) -> None:
    fd = os.open(m / "big", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.posix_fallocate(fd, 0, 1 << 20)
        assert os.fstat(fd).st_size == 1 << 20
        os.pwrite(fd, b"head", 0)
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    src, dst = os.open(m / "big", os.O_RDONLY), os.open(m / "copy", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        copied = 0
        while copied < 1 << 20:
            n = os.copy_file_range(src, dst, (1 << 20) - copied)
            assert n > 0
            copied += n
    finally:
        os.close(src)
        os.close(dst)
    assert (m / "copy").read_bytes()[:4] == b"head" and os.stat(m / "copy").st_size == 1 << 20
    dirfd = os.open(m / "dir", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def test_locks_behave_as_on_a_local_filesystem(m: Path) -> None:
    code = (
        "import fcntl, sys\n"
        "f = open(sys.argv[1], 'r+')\n"
        "try:\n"
        "    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('lockf-free')\n"
        "except OSError: print('lockf-held')\n"
        "try:\n"
        "    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('flock-free')\n"
        "except OSError: print('flock-held')\n"
    )
    with open(m / "file", "r+") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        fcntl.flock(f, fcntl.LOCK_EX)
        held = subprocess.run([sys.executable, "-c", code, str(m / "file")], capture_output=True, text=True)
        assert held.stdout.split() == ["lockf-held", "flock-held"]
        fcntl.lockf(f, fcntl.LOCK_UN)
        fcntl.flock(f, fcntl.LOCK_UN)
    free = subprocess.run([sys.executable, "-c", code, str(m / "file")], capture_output=True, text=True)
    assert free.stdout.split() == ["lockf-free", "flock-free"]


def test_xattrs_on_every_type_and_name_limits(m: Path) -> None:
    for target in (m / "file", m / "dir"):
        os.setxattr(target, "user.k", b"v")
        assert os.getxattr(target, "user.k") == b"v"
        os.removexattr(target, "user.k")
        expect_errno(errno.ENODATA, os.getxattr, target, "user.k")
    os.symlink("file", m / "link")
    if os.geteuid() == 0:
        os.setxattr(m / "link", "trusted.k", b"v", follow_symlinks=False)
        assert os.getxattr(m / "link", "trusted.k", follow_symlinks=False) == b"v"
    with pytest.raises(OSError) as info:  # Linux keeps user.* xattrs off symlinks, as on any filesystem
        os.setxattr(m / "link", "user.k", b"v", follow_symlinks=False)
    assert info.value.errno == errno.EPERM
    (m / ("n" * 255)).write_text("ok")
    assert (m / ("n" * 255)).read_text() == "ok"
    expect_errno(errno.ENAMETOOLONG, os.open, m / ("n" * 256), os.O_CREAT | os.O_WRONLY)
    assert os.access(m / "file", os.R_OK | os.W_OK) and not os.access(m / "missing", os.F_OK)


def test_real_tools_work_and_their_results_survive_a_remount(mounter: Mounter, tmp_path: Path) -> None:
    """git, pip into a venv, tar over lower files, mv of lower directories and rm -rf of lower trees."""
    lower, up, work = tmp_path / "lower", tmp_path / "up", tmp_path / "work"
    for d in (lower, up, work):
        d.mkdir()
    for i in range(200):
        write(lower / "usr" / "share" / f"pkg{i % 7}" / f"doc{i}.txt", f"doc {i}\n" * (i % 5 + 1))
    write(lower / "srv" / "app" / "main.py", "print('v1')\n")
    wheel = make_wheel(lower / "dist", "demo_pkg", "VALUE = 42\n")
    archive = tmp_path / "over.tar"
    with tarfile.open(archive, "w") as tar:
        for i in range(0, 200, 3):
            data = tmp_path / "payload"
            data.write_text(f"replaced {i}\n")
            tar.add(data, arcname=f"usr/share/pkg{i % 7}/doc{i}.txt")
    mount = mounter([lower], up, work)
    root = mount.mountpoint
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "HOME": str(tmp_path),
    }

    def run(*args: str, cwd: Path = root) -> str:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    app = root / "srv" / "app"
    run("git", "init", "-q", "-b", "main", cwd=app)
    run("git", "add", ".", cwd=app)
    run("git", "commit", "-qm", "v1", cwd=app)
    run("git", "checkout", "-qb", "feature", cwd=app)
    (app / "main.py").write_text("print('v2')\n")
    run("git", "commit", "-qam", "v2", cwd=app)
    run("git", "checkout", "-q", "main", cwd=app)
    assert (app / "main.py").read_text() == "print('v1')\n"
    run("git", "fsck", "--no-progress", cwd=app)
    run(sys.executable, "-m", "venv", str(root / "venv"))
    run(str(root / "venv" / "bin" / "pip"), "install", "-q", "--no-index", str(root / "dist" / wheel.name))
    assert run(str(root / "venv" / "bin" / "python"), "-c", "import demo_pkg; print(demo_pkg.VALUE)") == "42\n"
    run("tar", "xf", str(archive), "-C", str(root))
    os.rename(root / "usr" / "share" / "pkg3", root / "usr" / "share" / "pkg3-renamed")  # no EXDEV
    run("mv", str(root / "usr" / "share" / "pkg4"), str(root / "srv" / "pkg4"))
    shutil.rmtree(root / "usr" / "share" / "pkg5")
    assert (root / "usr" / "share" / "pkg0" / "doc0.txt").read_text() == "replaced 0\n"  # over a lower file
    assert (root / "usr" / "share" / "pkg1" / "doc1.txt").read_text() == "doc 1\n" * 2  # untouched
    assert (root / "usr" / "share" / "pkg3-renamed" / "doc3.txt").read_text() == "replaced 3\n"
    assert not (root / "usr" / "share" / "pkg5").exists() and (root / "srv" / "pkg4" / "doc4.txt").exists()
    expected = snapshot(root)
    mount.remount()
    assert snapshot(root) == expected
    assert (app / "main.py").read_text() == "print('v1')\n"
    run("git", "checkout", "-q", "feature", cwd=app)
    assert (app / "main.py").read_text() == "print('v2')\n"
    assert run(str(root / "venv" / "bin" / "python"), "-c", "import demo_pkg; print(demo_pkg.VALUE)") == "42\n"
    assert not (lower / "srv" / "app" / ".git").exists()  # nothing ever written below


def test_a_listing_read_in_parts_while_entries_go_returns_each_other_entry_once(
    mounter: Mounter, tmp_path: Path
) -> None:
    lower, up, work = tmp_path / "lower", tmp_path / "up", tmp_path / "work"
    for d in (lower, up, work):
        d.mkdir()
    names = [f"entry-{n:04d}-" + "x" * 60 for n in range(600)]  # long names: many readdir requests
    for name in names[:300]:
        write(lower / "big" / name, "")
    m = mounter([lower], up, work).mountpoint
    for name in names[300:]:
        write(m / "big" / name, "")
    assert sorted(os.listdir(m / "big")) == names  # read whole once: the kernel may now cache it
    seen: list[str] = []
    ahead: set[str] = set()  # deleted before the reader came to them
    with os.scandir(m / "big") as it:
        for entry in it:  # delete each entry seen and, every 50 entries, every seventh one not yet seen
            seen.append(entry.name)
            if entry.name in ahead:  # POSIX lets a removed entry still show (libc reads ahead, too)
                continue
            os.unlink(entry.path)
            if len(seen) % 50 == 0:
                for name in names[::7]:
                    if name not in ahead and name not in seen:
                        os.unlink(m / "big" / name)
                        ahead.add(name)
    assert len(seen) == len(set(seen))
    assert set(names) - ahead <= set(seen)
    assert ahead and os.listdir(m / "big") == []
    os.rmdir(m / "big")
    mounter.mounts[-1].remount()
    assert not (m / "big").exists()


def test_an_open_file_can_still_be_changed_after_its_last_name_goes(m: Path) -> None:
    for name in ("file", "new"):  # a lower file (copied up by the open) and an upper one
        fd = os.open(m / name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"data")
            os.unlink(m / name)
            os.ftruncate(fd, 4096)
            os.fchmod(fd, 0o600)
            os.utime(fd, ns=(1_500_000_000 * 10**9, 1_500_000_000 * 10**9))
            st = os.fstat(fd)
            assert (st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (4096, 0o600, 1_500_000_000 * 10**9)
            assert os.pread(fd, 8, 0) == b"data\0\0\0\0"
        finally:
            os.close(fd)
        assert not (m / name).exists()
