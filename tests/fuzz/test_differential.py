"""Differential fuzzing: the same random operations on our mount and on kernel overlayfs over the same layers.

Every step's outcome (result or errno) must match, and so must the whole merged view after it, including after
remounts and dropped caches. Intended differences (see INTENDED below) are handled, not ignored.

Run longer with `make fuzz` (UNIONFS_FUZZ_EXAMPLES, UNIONFS_FUZZ_MINUTES); failures replay from the Hypothesis
database in .hypothesis/. UNIONFS_FUZZ_TARGET=fuse-overlayfs points the suite at fuse-overlayfs instead of us.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.support import UNIONFS, fuse_usable, is_mounted, kernel_overlay, reap, snapshot

#: Where we intend to differ from kernel overlayfs, and how the fuzzer keeps the two comparable.
INTENDED = {
    "directory rename": "the kernel answers EXDEV for a directory that exists below; we move it. The kernel side "
    "then does what mv(1) does on EXDEV (copy, then delete), so both views must still agree.",
    "directory rename errors": "for a directory that exists below, the kernel answers EXDEV before anything else; "
    "we answer what POSIX says of the rename itself (ENOTEMPTY, ENOTDIR, EISDIR, EINVAL), which is also where mv's "
    "copy fallback would fail. Both views must still agree.",
    "hard links": "not exercised here: the kernel (without index=on) lets names of one lower inode drift apart "
    "after a copy-up, we keep them one file (tests/fs/test_semantics.py checks ours against a plain model).",
    "merged directory st_nlink, st_ino, st_dev, atime, ctime, directory sizes and mtimes": "not compared.",
}

NAMES = ["a", "b", "c", "dir", "dir/x", "dir/y", "dir/sub", "dir/sub/z", "other", "other/w"]
#: Symlink targets are relative and climb nowhere, so whatever follows them (the kernel, for the client's
#: operations) stays inside the tree under test. Never an absolute or `..` target here: the test itself would
#: write through it to the host.
LINK_TARGETS = ["a", "x", "sub", "y"]
TARGET = os.environ.get("UNIONFS_FUZZ_TARGET", "unionfs")
EXAMPLES = int(os.environ.get("UNIONFS_FUZZ_EXAMPLES", "5"))  # per round; a timed run repeats rounds
MINUTES = float(os.environ.get("UNIONFS_FUZZ_MINUTES", "0"))


def _skip_reason() -> str | None:
    if fuse_usable() is not None:
        return f"FUSE: {fuse_usable()}"
    if os.geteuid() != 0:
        return "kernel overlayfs (the oracle) needs root"
    return None


def outcome(func, *args) -> object:  # type: ignore[no-untyped-def]
    """A call's result, or the name of the errno it failed with."""
    try:
        result = func(*args)
        return "ok" if result is None else result
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def build_layer(root: Path, rng: random.Random, below: Path | None) -> None:
    """A small random layer in the kernel's forms (char-dev whiteouts, trusted.overlay.opaque), which both read.
    Whiteouts and opaque markers only where the layer `below` has something to hide: kernel overlayfs lists a
    whiteout that hides nothing (in a directory no lower layer has) yet cannot stat it; real layers never hold
    one."""
    whiteouts = below is not None
    root.mkdir(parents=True)
    for name in NAMES:
        path = root / name
        roll = rng.random()
        parents = [root / "/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1)]
        if any(os.path.islink(p) or not os.path.isdir(p) for p in parents) or os.path.lexists(path):
            continue  # never create beneath a symlink: that would write wherever it points
        if roll < 0.3:
            path.mkdir()
            if below is not None and os.path.isdir(below / name) and rng.random() < 0.3:
                os.setxattr(path, "trusted.overlay.opaque", b"y")
        elif roll < 0.6:
            path.write_bytes(rng.randbytes(rng.randrange(0, 3000)))
            os.chmod(path, rng.choice([0o644, 0o600, 0o755]))
        elif roll < 0.7:
            os.symlink(rng.choice(LINK_TARGETS), path)
        elif whiteouts and below is not None and merges(root, below, name) and roll < 0.85:
            os.mknod(path, stat.S_IFCHR, 0)


def merges(top: Path, below: Path, name: str) -> bool:
    """Whether a whiteout for `name` in `top` hides something: `below` has the name, and every parent directory
    merges (a real, non-opaque directory in both layers)."""
    if not os.path.lexists(below / name):
        return False
    parts = name.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        for layer in (top, below):
            path = layer / parent
            if os.path.islink(path) or not os.path.isdir(path):
                return False
        try:
            if os.getxattr(top / parent, "trusted.overlay.opaque") == b"y":
                return False
        except OSError:
            pass
    return True


def read_all(path: str) -> bytes:
    """A file's bytes; O_NONBLOCK so that a fifo the sequence made reads as empty instead of waiting forever."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class UnionVsKernel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="fuzz-"))
        self.pid: int | None = None
        self.kernel_cm: object | None = None

    @initialize(seed=st.integers(0, 2**32 - 1))
    def setup(self, seed: int) -> None:
        if os.environ.get("UNIONFS_FUZZ_LOG"):
            with open(os.environ["UNIONFS_FUZZ_LOG"], "a") as log:
                log.write(f"--- setup seed={seed}\n")
        rng = random.Random(seed)
        bottom, top = self.base / "l1", self.base / "l0"
        build_layer(bottom, rng, None)
        build_layer(top, rng, bottom)
        lowers = [top, bottom]
        kernel_lowers = []
        for layer in lowers:
            copy = self.base / f"k{layer.name}"
            subprocess.run(["cp", "-a", str(layer), str(copy)], check=True)
            kernel_lowers.append(copy)
        self.lowers, self.kernel_lowers = lowers, kernel_lowers
        for name in ("up", "work", "kup", "kwork", "mnt", "kmnt"):
            (self.base / name).mkdir()
        self.mount_ours()
        self.mount_kernel()

    def mount_ours(self) -> None:
        mnt = self.base / "mnt"
        options = f"lowerdir={':'.join(map(str, self.lowers))},upperdir={self.base / 'up'},workdir={self.base / 'work'}"
        if TARGET == "fuse-overlayfs":
            subprocess.run(["fuse-overlayfs", "-o", options, str(mnt)], check=True, capture_output=True)
            return
        pidfile = self.base / "pid"
        subprocess.run(
            [*UNIONFS, "mount", "-o", options, "--pidfile", str(pidfile), str(mnt)], check=True, capture_output=True
        )
        self.pid = int(pidfile.read_text())

    def mount_kernel(self) -> None:
        self.kernel_cm = kernel_overlay(self.base / "kmnt", self.kernel_lowers, self.base / "kup", self.base / "kwork")
        self.kernel_cm.__enter__()  # type: ignore[attr-defined]

    def unmount(self) -> None:
        mnt = self.base / "mnt"
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        if self.pid is not None:
            reap(self.pid)
            self.pid = None
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
        if self.kernel_cm is not None:
            self.kernel_cm.__exit__(None, None, None)  # type: ignore[attr-defined]
            self.kernel_cm = None

    def teardown(self) -> None:
        self.unmount()
        shutil.rmtree(self.base, ignore_errors=True)

    def both(self, func, *paths_and_args) -> None:  # type: ignore[no-untyped-def]
        """Apply `func(root/path..., args...)` to both mounts; their outcomes must match."""
        if os.environ.get("UNIONFS_FUZZ_LOG"):
            with open(os.environ["UNIONFS_FUZZ_LOG"], "a") as log:
                log.write(f"{func.__name__} {paths_and_args!r}\n")
        results = []
        for root in (self.base / "mnt", self.base / "kmnt"):
            args = [root / a if isinstance(a, PathArg) else a for a in paths_and_args]
            results.append(outcome(func, *args))
        assert results[0] == results[1], f"{func.__name__}{paths_and_args}: ours {results[0]}, kernel {results[1]}"

    # -- operations ------------------------------------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES), data=st.binary(max_size=2000), offset=st.integers(0, 4000))
    def write_at(self, name: str, data: bytes, offset: int) -> None:
        def op(path: Path, data: bytes, offset: int) -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, 0o644)  # a fifo: ENXIO, no hang
            try:
                os.pwrite(fd, data, offset)
            finally:
                os.close(fd)

        self.both(op, PathArg(name), data, offset)

    @rule(name=st.sampled_from(NAMES), data=st.binary(max_size=500))
    def append(self, name: str, data: bytes) -> None:
        def op(path: Path, data: bytes) -> None:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

        self.both(op, PathArg(name), data)

    @rule(name=st.sampled_from(NAMES), size=st.integers(0, 5000))
    def truncate(self, name: str, size: int) -> None:
        self.both(os.truncate, PathArg(name), size)

    @rule(name=st.sampled_from(NAMES))
    def read(self, name: str) -> None:
        self.both(read_all, PathArg(name))

    @rule(name=st.sampled_from(NAMES))
    def unlink(self, name: str) -> None:
        self.both(os.unlink, PathArg(name))

    @rule(name=st.sampled_from(NAMES), mode=st.sampled_from([0o755, 0o700, 0o750]))
    def mkdir(self, name: str, mode: int) -> None:
        self.both(os.mkdir, PathArg(name), mode)

    @rule(name=st.sampled_from(NAMES))
    def rmdir(self, name: str) -> None:
        self.both(os.rmdir, PathArg(name))

    @rule(name=st.sampled_from(NAMES), link_to=st.sampled_from(LINK_TARGETS))
    def symlink(self, name: str, link_to: str) -> None:
        self.both(lambda p, t: os.symlink(t, p), PathArg(name), link_to)

    @rule(name=st.sampled_from(NAMES), mode=st.sampled_from([0o644, 0o600, 0o755, 0o4755]))
    def chmod(self, name: str, mode: int) -> None:
        self.both(
            lambda p, m: os.chmod(p, m, follow_symlinks=False) if not os.path.islink(p) else None, PathArg(name), mode
        )

    @rule(name=st.sampled_from(NAMES), mtime=st.integers(0, 2_000_000_000))
    def utime(self, name: str, mtime: int) -> None:
        self.both(lambda p, t: os.utime(p, ns=(t * 10**9, t * 10**9), follow_symlinks=False), PathArg(name), mtime)

    @rule(name=st.sampled_from(NAMES), value=st.binary(min_size=1, max_size=20))
    def setxattr(self, name: str, value: bytes) -> None:
        self.both(lambda p, v: os.setxattr(p, "user.fuzz", v, follow_symlinks=False), PathArg(name), value)

    @rule(name=st.sampled_from(NAMES))
    def mkfifo(self, name: str) -> None:
        self.both(os.mkfifo, PathArg(name))

    @rule(src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES))
    def rename(self, src: str, dst: str) -> None:
        ours = outcome(os.rename, self.base / "mnt" / src, self.base / "mnt" / dst)
        theirs = outcome(os.rename, self.base / "kmnt" / src, self.base / "kmnt" / dst)
        if theirs == "EXDEV" and ours in ("ENOTEMPTY", "ENOTDIR", "EISDIR", "EINVAL", "EEXIST"):
            return  # INTENDED["directory rename errors"]
        if theirs == "EXDEV" and ours == "ok":  # INTENDED["directory rename"]: the kernel side does what mv does
            ksrc, kdst = self.base / "kmnt" / src, self.base / "kmnt" / dst
            if kdst.is_dir() and not kdst.is_symlink():
                kdst.rmdir()
            shutil.copytree(ksrc, kdst, symlinks=True, copy_function=shutil.copy2)
            shutil.rmtree(ksrc)
            return
        assert ours == theirs, f"rename {src} -> {dst}: ours {ours}, kernel {theirs}"

    @rule()
    def remount(self) -> None:
        self.unmount()
        self.mount_ours()
        self.mount_kernel()

    @rule()
    def drop_caches(self) -> None:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")

    @precondition(lambda self: hasattr(self, "lowers"))
    @invariant()
    def same_view(self) -> None:
        assert snapshot(self.base / "mnt") == snapshot(self.base / "kmnt")


class PathArg(str):
    """A path relative to the mount root (so `both` can apply it to each)."""


UnionVsKernel.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_union_matches_kernel_overlayfs() -> None:
    if MINUTES:
        import time

        deadline = time.monotonic() + MINUTES * 60
        while time.monotonic() < deadline:
            UnionVsKernel.TestCase().runTest()
    else:
        UnionVsKernel.TestCase().runTest()
