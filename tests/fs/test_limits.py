"""Name limits, fallocate(2) and overlapping layer directories: what programs see on ext4 and kernel overlayfs.

Each call is made twice, through the mount and on a plain directory of the same filesystem (ext4 here) holding
the same files, and the two answers (errno, size, blocks, content) must be the same. Overlapping directories
are refused as kernel overlayfs refuses them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fs.conftest import Mounter
from tests.support import UNIONFS, is_mounted, kernel_overlay, snapshot, upper_snapshot, write
from unionfs.api import reap

BLOCK = 65536


def answer(call: Callable[..., object], *args: Any, **kwargs: Any) -> str:
    """The name of the errno `call(*args, **kwargs)` fails with, or "ok"."""
    try:
        call(*args, **kwargs)
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]
    return "ok"


def fill(path: Path) -> None:
    """The same files in a layer and in the plain directory: a file, a directory with a file, a larger file."""
    write(path / "f", "lower file\n")
    write(path / "d" / "inner", "inner\n")
    write(path / "data", bytes(range(256)) * (3 * BLOCK // 256))


@pytest.fixture
def pair(mounter: Mounter, tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """(mount, plain directory, upper): a lower layer and the plain directory hold the same files, then the
    same upper-only directory and file are made in both."""
    lower, upper, work, plain = (tmp_path / n for n in ("lower", "upper", "work", "plain"))
    for d in (lower, upper, work, plain):
        d.mkdir()
    fill(lower)
    fill(plain)
    mnt = mounter([lower], upper, work).mountpoint
    for root in (mnt, plain):
        write(root / "u" / "made", "upper file\n")
        write(root / "uf", "upper file\n")
        os.mkdir(root / "d" / "m")  # a merged directory's upper part
    yield mnt, plain, upper


# -- name limits -------------------------------------------------------------------------------------------------

#: Each call on path `p` (relative to the root), with `f`, `d` and `u` (a lower file, a lower directory and an
#: upper one) at the other end.
NAME_CALLS: dict[str, Callable[[str], object]] = {
    "lstat": os.lstat,
    "stat": os.stat,
    "statvfs": os.statvfs,
    "readlink": os.readlink,
    "listdir": os.listdir,
    "open": lambda p: os.close(os.open(p, os.O_RDONLY)),
    "open-write": lambda p: os.close(os.open(p, os.O_WRONLY)),
    "unlink": os.unlink,
    "rmdir": os.rmdir,
    "chmod": lambda p: os.chmod(p, 0o600),
    "chown": lambda p: os.chown(p, 0, 0, follow_symlinks=False),
    "truncate": lambda p: os.truncate(p, 0),
    "utime": lambda p: os.utime(p, (1, 1), follow_symlinks=False),
    "getxattr": lambda p: os.getxattr(p, "user.x", follow_symlinks=False),
    "setxattr": lambda p: os.setxattr(p, "user.x", b"1", follow_symlinks=False),
    "creat": lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)),
    "mkdir": os.mkdir,
    "mkfifo": os.mkfifo,
    "mknod-0/0": lambda p: os.mknod(p, stat.S_IFCHR | 0o600, 0),  # a whiteout's form: its check comes later
    "symlink": lambda p: os.symlink("f", p),
    "link-lower-file": lambda p: os.link("f", p),
    "rename-lower-file": lambda p: os.rename("f", p),
    "rename-lower-dir": lambda p: os.rename("d", p),
    "rename-upper-dir": lambda p: os.rename("u", p),
    "rename-from": lambda p: os.rename(p, "u/renamed"),
}
#: 256: one byte over NAME_MAX; 4095: the longest name the kernel hands a FUSE filesystem to look up
LENGTHS = (256, 1025, 4095)
#: where the long name stands: last, or in the middle, under the root, a lower, merged or upper directory, or
#: under a file (ENOTDIR first)
PLACES = ("{}", "d/{}", "d/m/{}", "u/{}", "{}/f", "d/{}/inner", "u/{}/x", "f/{}", "uf/{}")


@pytest.mark.parametrize("call", sorted(NAME_CALLS))
def test_too_long_names_get_what_ext4_gives(
    pair: tuple[Path, Path, Path], call: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mnt, plain, upper = pair
    before = upper_snapshot(upper)
    got: dict[str, str] = {}
    want: dict[str, str] = {}
    for length in LENGTHS:
        for place in PLACES:
            path = place.format("n" * length)  # relative: the longest names fit in PATH_MAX only so
            label = f"{place.format(f'<{length} bytes>')}"
            monkeypatch.chdir(plain)
            want[label] = answer(NAME_CALLS[call], path)
            monkeypatch.chdir(mnt)
            got[label] = answer(NAME_CALLS[call], path)
    assert got == want
    assert "ENAMETOOLONG" in want.values()
    # nothing was copied up, whited out or made on the way to the answer
    assert upper_snapshot(upper) == before
    assert snapshot(mnt) == snapshot(plain)


def test_a_name_of_255_bytes_works_and_is_not_confused_with_a_longer_one(pair: tuple[Path, Path, Path]) -> None:
    mnt, plain, _ = pair
    name = "n" * 255
    for root in (mnt, plain):
        write(root / "d" / name, "max\n")
        assert answer(os.lstat, root / "d" / (name + "x")) == "ENAMETOOLONG"
        os.rename(root / "d" / name, root / "u" / name)
        assert (root / "u" / name).read_text() == "max\n"
    assert snapshot(mnt) == snapshot(plain)


def test_paths_longer_than_path_max_work_through_directory_fds(mounter: Mounter, tmp_path: Path) -> None:
    """A tree deeper than PATH_MAX: a full path to its bottom is ENAMETOOLONG (the kernel's answer, for both);
    walked a directory at a time, the mount copies up, creates, renames and removes there as ext4 does."""
    lower, upper, work, plain = (tmp_path / n for n in ("lower", "upper", "work", "plain"))
    for d in (lower, upper, work, plain):
        d.mkdir()
    component, depth = "p" * 250, 20  # about 5 KiB below the root
    for root in (lower, plain):
        fd = deep_dir(root, component, depth, create=True)
        os.close(os.open("bottom", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        os.close(fd)
    mnt = mounter([lower], upper, work).mountpoint
    results = {}
    for root in (mnt, plain):
        full = os.path.join(root, *[component] * depth, "bottom")
        fd = deep_dir(root, component, depth)
        try:
            results[root] = [
                answer(os.stat, full),
                answer(write_at, fd, "bottom", b"written deep\n"),
                answer(write_at, fd, "new", b"new\n"),
                answer(os.rename, "new", "renamed", src_dir_fd=fd, dst_dir_fd=fd),
                answer(os.mkdir, "sub", dir_fd=fd),
                answer(os.rmdir, "sub", dir_fd=fd),
                sorted(os.listdir(fd)),
                read_at(fd, "bottom"),
                read_at(fd, "renamed"),
            ]
        finally:
            os.close(fd)
    assert results[mnt] == results[plain]
    assert results[mnt][0] == "ENAMETOOLONG"
    fd = deep_dir(upper, component, depth)  # the lower file was copied up, parents first
    try:
        assert read_at(fd, "bottom") == b"written deep\n"
    finally:
        os.close(fd)
    fd = deep_dir(lower, component, depth)
    try:
        assert read_at(fd, "bottom") == b""
    finally:
        os.close(fd)


def deep_dir(root: Path, component: str, depth: int, create: bool = False) -> int:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        if create:
            os.mkdir(component, dir_fd=fd)
        child = os.open(component, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    return fd


def write_at(dirfd: int, name: str, data: bytes) -> None:
    fd = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644, dir_fd=dirfd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_at(dirfd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY, dir_fd=dirfd)
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


# -- fallocate ---------------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
KEEP_SIZE, PUNCH_HOLE, COLLAPSE_RANGE, ZERO_RANGE, INSERT_RANGE = 0x01, 0x02, 0x08, 0x10, 0x20


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


#: the modes FUSE passes on to the filesystem
MODES = {
    "plain": 0,
    "keep-size": KEEP_SIZE,
    "punch-hole": PUNCH_HOLE | KEEP_SIZE,
    "zero-range": ZERO_RANGE,
    "zero-range-keep-size": ZERO_RANGE | KEEP_SIZE,
}
#: (offset, length) of each call: inside the data, across its end, far past it, and unaligned
RANGES = ((BLOCK, BLOCK), (2 * BLOCK + 4096, 2 * BLOCK), (8 * BLOCK, BLOCK), (100, 5000))


#: st_blocks counts ext4's extent-tree blocks too: whether a file needs one depends on how fragmented its free
#: space was, so two files given the same calls may differ by one 4 KiB block (8 sectors) and no more
TREE_BLOCK = 8


def allocation(path: Path, fd: int, blocks: list[int]) -> tuple[object, ...]:
    """What a program sees of a file after fallocate: its size through its fd and through a fresh stat of its
    name, and its data; its st_blocks both ways go to `blocks`."""
    st, named = os.fstat(fd), os.stat(path)
    blocks.extend((st.st_blocks, named.st_blocks))
    return st.st_size, named.st_size, hashlib.sha256(os.pread(fd, 16 * BLOCK, 0)).hexdigest()


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("where", ["new file", "lower file", "upper file"])
def test_fallocate_matches_ext4(pair: tuple[Path, Path, Path], mode: str, where: str) -> None:
    mnt, plain, upper = pair
    name = {"new file": "new", "lower file": "data", "upper file": "u/made"}[where]
    for root in (mnt, plain):
        if where == "new file":
            write(root / name, bytes(range(256)) * (3 * BLOCK // 256))
    # written back now: ext4 allocates delayed data (and maybe an extent-tree block) whenever writeback runs,
    # which under load could fall between the mount's stat and the upper's
    os.sync()
    got: list[object] = []
    want: list[object] = []
    blocks: dict[Path, list[int]] = {mnt: [], plain: [], upper: []}
    for root, results in ((mnt, got), (plain, want)):
        fd = os.open(root / name, os.O_RDWR)
        try:
            results.append(allocation(root / name, fd, blocks[root]))
            for offset, length in RANGES:
                results.append(answer(fallocate, fd, MODES[mode], offset, length))
                results.append(allocation(root / name, fd, blocks[root]))
                if root == mnt:  # (a lower file is copied up when opened for writing)
                    blocks[upper].extend([os.stat(upper / name).st_blocks] * 2)
        finally:
            os.close(fd)
        results.append(os.stat(root / name).st_size)  # after close
        blocks[root].append(os.stat(root / name).st_blocks)
    assert got == want
    assert got[1] == "ok"
    # the kernel's cached attributes follow every call: the mount shows the upper file's blocks
    assert blocks[mnt][2:-1] == blocks[upper] and blocks[mnt][-1] == blocks[mnt][-2]
    assert all(abs(a - b) <= TREE_BLOCK for a, b in zip(blocks[mnt], blocks[plain], strict=True)), blocks
    assert (upper / name).read_bytes() == (plain / name).read_bytes()


def test_fallocate_through_a_write_only_handle_and_a_read_only_one(pair: tuple[Path, Path, Path]) -> None:
    """A write-only handle writes past the mount's page cache (direct I/O): fallocate on it behaves the same; a
    read-only handle gets EBADF, as the kernel gives on any filesystem."""
    mnt, plain, _ = pair
    got: list[object] = []
    want: list[object] = []
    for root, results in ((mnt, got), (plain, want)):
        for flags in (os.O_WRONLY, os.O_RDONLY):
            fd = os.open(root / "f", flags)
            try:
                results.append(answer(fallocate, fd, 0, 0, 3 * BLOCK))
                results.append(answer(fallocate, fd, PUNCH_HOLE | KEEP_SIZE, 0, 4))
                results.append((os.fstat(fd).st_size, os.fstat(fd).st_blocks))
            finally:
                os.close(fd)
        results.append((root / "f").read_bytes())
    assert got == want
    assert got[:2] == ["ok", "ok"] and got[3:5] == ["EBADF", "EBADF"]


@pytest.mark.parametrize("mode", ["collapse-range", "insert-range"])
def test_fallocate_modes_the_kernel_keeps_from_fuse(pair: tuple[Path, Path, Path], mode: str) -> None:
    """COLLAPSE_RANGE and INSERT_RANGE: ext4 has them, but the kernel's FUSE client refuses them (EOPNOTSUPP)
    before any FUSE filesystem is asked, fuse-overlayfs's too. The file is left as it was."""
    mnt, plain, _ = pair
    flag = {"collapse-range": COLLAPSE_RANGE, "insert-range": INSERT_RANGE}[mode]
    before = (plain / "data").read_bytes()
    for root, expected in ((plain, "ok"), (mnt, errno.errorcode[errno.EOPNOTSUPP])):
        fd = os.open(root / "data", os.O_RDWR)
        try:
            assert answer(fallocate, fd, flag, BLOCK, BLOCK) == expected
        finally:
            os.close(fd)
    assert (mnt / "data").read_bytes() == before != (plain / "data").read_bytes()


# -- overlapping directories -------------------------------------------------------------------------------------

#: (lowerdir, upperdir, workdir) among directories A, B, U, W (each with a `sub`) and S -> A; whether kernel
#: overlayfs refuses it too (Linux 6.18); what our one line says. The kernel lets an upper or a work dir inside a
#: lower through: refused here all the same, as writes through the mount would change a layer that must not
#: change (ARCHITECTURE section 3).
UPPER_LOWER = "overlap: keep the upper outside every lower layer"
WORK_LOWER = "overlap: keep the work dir outside every lower layer"
UPPER_WORK = "overlap: use two separate directories"
LOWER_LOWER = "overlap: list each layer once, none inside another"
TWICE = "is given twice: list each layer once"
OVERLAPS = {
    "upper inside a lower": ("A", "A/sub", "W", False, UPPER_LOWER),
    "work dir inside a lower": ("A", "U", "A/sub", False, WORK_LOWER),
    "lower inside the upper": ("U/sub", "U", "W", True, UPPER_LOWER),
    "lower inside the work dir": ("W/sub", "U", "W", True, WORK_LOWER),
    "work dir inside the upper": ("A", "U", "U/sub", True, UPPER_WORK),
    "upper inside the work dir": ("A", "W/sub", "W", True, UPPER_WORK),
    "work dir is the upper": ("A", "U", "U", True, UPPER_WORK),
    "upper is a lower": ("A", "A", "W", True, UPPER_LOWER),
    "work dir is a lower": ("A", "U", "A", True, WORK_LOWER),
    "a lower twice": ("A:B:A", None, None, True, TWICE),
    "a lower twice through a symlink": ("A:B:S", "U", "W", True, TWICE),
    "a lower inside a lower": ("A:A/sub", None, None, True, LOWER_LOWER),
    "a lower inside a lower below it": ("A/sub:B:A", "U", "W", True, LOWER_LOWER),
}


def overlap_tree(base: Path) -> Path:
    for d in ("A/sub", "B", "U/sub", "W/sub", "mnt"):
        (base / d).mkdir(parents=True)
    os.symlink("A", base / "S")
    return base


def options(base: Path, lowers: str, upper: str | None, work: str | None) -> str:
    text = "lowerdir=" + ":".join(str(base / d) for d in lowers.split(":"))
    if upper is not None and work is not None:
        text += f",upperdir={base / upper},workdir={base / work}"
    return text


@contextlib.contextmanager
def cli_mount(base: Path, opts: str) -> Iterator[subprocess.CompletedProcess[str]]:
    """`unionfs mount` as a user runs it; whatever it mounted is unmounted and its daemon reaped."""
    mnt, pidfile = base / "mnt", base / "pid"
    try:
        yield subprocess.run(
            [*UNIONFS, "mount", "-o", opts, "--pidfile", str(pidfile), str(mnt)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        if is_mounted(mnt):
            subprocess.run([*UNIONFS, "umount", str(mnt)], capture_output=True, timeout=60)
        if pidfile.exists():
            reap(int(pidfile.read_text()))
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)


def kernel_mounts(base: Path, lowers: str, upper: str | None, work: str | None) -> bool:
    """Whether kernel overlayfs mounts these directories (unmounted again at once)."""
    try:
        with kernel_overlay(
            base / "mnt",
            [base / d for d in lowers.split(":")],
            base / upper if upper else None,
            base / work if work else None,
        ):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("case", sorted(OVERLAPS))
def test_overlapping_directories_are_refused_in_one_line(tmp_path: Path, case: str) -> None:
    lowers, upper, work, kernel_refuses, says = OVERLAPS[case]
    base = overlap_tree(tmp_path / "ours")
    before = snapshot(base)
    with cli_mount(base, options(base, lowers, upper, work)) as done:
        mounted = is_mounted(base / "mnt")
    assert not mounted
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unionfs: error: ") and says in lines[0], done.stderr
    assert snapshot(base) == before  # nothing made in the work dir or anywhere else
    # what the refusal is measured against, where kernel overlayfs can be mounted
    if os.geteuid() == 0 and kernel_mounts(overlap_tree(tmp_path / "probe"), "A:B", "U", "W"):
        assert kernel_mounts(overlap_tree(tmp_path / "kernel"), lowers, upper, work) != kernel_refuses


def test_bind_mounts_do_not_hide_an_overlap(tmp_path: Path) -> None:
    """An upper reached through a bind mount of a directory inside a lower is still inside that lower; so is a
    lower reached that way."""
    if os.geteuid() != 0:
        pytest.skip("needs root to bind-mount")
    base = overlap_tree(tmp_path)
    (base / "X").mkdir()
    subprocess.run(["mount", "--bind", str(base / "A" / "sub"), str(base / "X")], check=True)
    try:
        with cli_mount(base, options(base, "A", "X", "W")) as upper_in_lower:
            mounted = is_mounted(base / "mnt")
        with cli_mount(base, options(base, "B:X:A", None, None)) as lower_in_lower:
            mounted = mounted or is_mounted(base / "mnt")
    finally:
        subprocess.run(["umount", str(base / "X")], check=True)
    assert not mounted
    assert upper_in_lower.returncode == 2 and UPPER_LOWER in upper_in_lower.stderr, upper_in_lower
    assert lower_in_lower.returncode == 2 and LOWER_LOWER in lower_in_lower.stderr, lower_in_lower


def test_directories_side_by_side_with_a_common_prefix_mount(mounter: Mounter, tmp_path: Path) -> None:
    """/x/A and /x/A2, /x/U and /x/Uw do not overlap: layers side by side still mount."""
    for d in ("A", "A2"):
        write(tmp_path / d / "f", d)
    for d in ("U", "Uw"):
        (tmp_path / d).mkdir()
    m = mounter([tmp_path / "A", tmp_path / "A2"], tmp_path / "U", tmp_path / "Uw").mountpoint
    assert (m / "f").read_text() == "A"
    (m / "g").write_text("g")
    assert (tmp_path / "U" / "g").read_text() == "g"
