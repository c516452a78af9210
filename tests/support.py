"""Test helpers: tree snapshots, layer builders, the kernel-overlayfs form, and mounts that always clean up."""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from unionfs.api import reap
from unionfs.whiteout import (
    FUSEOVERLAY_OPAQUE,
    OPAQUE_MARKER,
    TRUSTED_OPAQUE,
    USER_OPAQUE,
    is_opaque_dir,
    is_reserved_name,
    whited_out_target,
)

UNIONFS = [sys.executable, "-m", "unionfs"]
Snapshot = dict[str, tuple[object, ...]]


def user_xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names if n.startswith("user.")))


def describe(path: str, st: os.stat_result, *, times: bool) -> tuple[object, ...]:
    mode = st.st_mode
    common: tuple[object, ...] = (stat.S_IFMT(mode), stat.S_IMODE(mode), st.st_uid, st.st_gid, user_xattrs(path))
    if times and not stat.S_ISDIR(mode):
        common += (st.st_mtime_ns // 1000,)
    if stat.S_ISREG(mode):
        with open(path, "rb") as f:
            return (*common, st.st_size, hashlib.sha256(f.read()).hexdigest())
    if stat.S_ISLNK(mode):
        return (*common, os.readlink(path))
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return (*common, st.st_rdev)
    return common


def snapshot(root: str | Path, *, times: bool = False) -> Snapshot:
    """Every entry below root (symlinks not followed): type, mode, owner, user xattrs, size, content, target."""
    result: Snapshot = {}

    def walk(rel: str) -> None:
        here = os.path.join(root, rel) if rel else str(root)
        for name in sorted(os.listdir(here)):
            path = os.path.join(here, name)
            st = os.lstat(path)
            key = os.path.join(rel, name) if rel else name
            result[key] = describe(path, st, times=times)
            if stat.S_ISDIR(st.st_mode):
                walk(key)

    walk("")
    return result


def kept_times(root: str | Path, before_ns: int) -> dict[str, int]:
    """mtimes of the non-directories below root older than `before_ns`: those a union must preserve."""
    result = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) and st.st_mtime_ns < before_ns:
                result[os.path.relpath(path, root)] = st.st_mtime_ns
    return result


def upper_snapshot(root: str | Path) -> dict[str, tuple[object, ...]]:
    """An upper layer in normal form: whiteouts and opaque dirs in any form, union bookkeeping left out."""
    result: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            key = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            if name == OPAQUE_MARKER:
                result[os.path.dirname(key) or "."] += ("opaque",)
                continue
            if is_reserved_name(name):
                target = whited_out_target(name)
                if target is not None:
                    result[os.path.normpath(os.path.join(rel_dir, target))] = ("whiteout",)
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                result[key] = ("whiteout",)
                continue
            desc = describe(path, st, times=False)
            if stat.S_ISDIR(st.st_mode) and is_opaque_dir(path):
                desc += ("opaque",)
            result.setdefault(key, desc)
    return result


def to_kernel_form(layer: str | Path) -> None:
    """Rewrite a layer's OCI whiteouts and user.* opaque markers into the only forms kernel overlayfs reads."""
    for dirpath, dirs, files in os.walk(layer):
        for name in list(files) + list(dirs):
            path = os.path.join(dirpath, name)
            if name == OPAQUE_MARKER:
                os.unlink(path)
                os.setxattr(dirpath, TRUSTED_OPAQUE, b"y")
            elif (hidden := whited_out_target(name)) is not None:
                os.unlink(path)
                target = os.path.join(dirpath, hidden)
                if not os.path.lexists(target):
                    os.mknod(target, stat.S_IFCHR, 0)
                elif os.path.isdir(target) and not os.path.islink(target):
                    # OCI: a whiteout hides only lower layers; a same-layer dir shows, and nothing below it
                    os.setxattr(target, TRUSTED_OPAQUE, b"y")
        for attr in (USER_OPAQUE, FUSEOVERLAY_OPAQUE):
            with contextlib.suppress(OSError):
                if os.getxattr(dirpath, attr) == b"y":
                    os.removexattr(dirpath, attr)
                    os.setxattr(dirpath, TRUSTED_OPAQUE, b"y")


def copy_layers(layers: Sequence[Path], dest: Path) -> list[Path]:
    copies = []
    for layer in layers:
        copy = dest / layer.name
        subprocess.run(["cp", "-a", str(layer), str(copy)], check=True)
        copies.append(copy)
    return copies


def is_mounted(point: str | Path) -> bool:
    real = os.path.realpath(point)
    with open("/proc/self/mountinfo") as info:
        return any(line.split(" ")[4] == real for line in info)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def fuse_usable() -> str | None:
    """None when FUSE mounts can be made here, else the reason they cannot."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not usable by this user"
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    return None


class UnionMount:
    """A mount made by the CLI, as a user makes it; `close` unmounts and reaps the daemon whatever happened."""

    def __init__(
        self,
        mountpoint: Path,
        lowers: Sequence[Path],
        upper: Path | None = None,
        work: Path | None = None,
        options: Sequence[str] = (),
    ) -> None:
        self.mountpoint = mountpoint
        self.args = ["-o", "lowerdir=" + ":".join(map(str, lowers))]
        if upper is not None and work is not None:
            self.args[-1] += f",upperdir={upper},workdir={work}"
        if options:
            self.args[-1] += "," + ",".join(options)
        self.pidfile = mountpoint.parent / f".{mountpoint.name}.pid"
        self.log = mountpoint.parent / f".{mountpoint.name}.log"
        self.pid: int | None = None

    def open(self) -> UnionMount:
        mountpoint = self.mountpoint
        mountpoint.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [*UNIONFS, "mount", *self.args, "--pidfile", str(self.pidfile), "--log", str(self.log), str(mountpoint)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise AssertionError(f"mount failed ({done.returncode}): {done.stderr}")
        self.pid = int(self.pidfile.read_text())
        return self

    def close(self) -> None:
        if is_mounted(self.mountpoint):
            subprocess.run([*UNIONFS, "umount", str(self.mountpoint)], capture_output=True, timeout=60)
        if self.pid is not None:
            reap(self.pid)
            self.pid = None
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True)

    def remount(self) -> None:
        self.close()
        self.open()

    def daemon_log(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def __enter__(self) -> Path:
        self.open()
        return self.mountpoint

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def kernel_overlay(
    mountpoint: Path, lowers: Sequence[Path], upper: Path | None = None, work: Path | None = None
) -> Iterator[Path]:
    """Kernel overlayfs over the same layers: the oracle. Raises OSError where it cannot be mounted."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    options = "lowerdir=" + ":".join(map(str, lowers))
    if upper is not None and work is not None:
        options += f",upperdir={upper},workdir={work}"
    done = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(mountpoint)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise OSError(f"kernel overlayfs cannot be mounted here: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def write(path: Path, data: str | bytes, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        os.chmod(path, mode)
    return path


def build_three_layers(base: Path) -> list[Path]:
    """Three lower layers (returned top first) using every whiteout and opaque form we read, files shadowing
    directories and the reverse, symlinks pointing inside, outside and nowhere, odd modes, owners and xattrs."""
    l1, l2, l3 = base / "l1", base / "l2", base / "l3"
    for layer in (l1, l2, l3):
        layer.mkdir(parents=True)
    # bottom layer: the "base image"
    write(l3 / "a", "a from l3\n")
    write(l3 / "b", "b from l3\n")
    write(l3 / "c", "c from l3\n")
    write(l3 / "script.sh", "#!/bin/sh\necho hi\n", 0o755)
    write(l3 / "secret", "s\n", 0o600)
    write(l3 / "suid", "x", 0o4755)
    write(l3 / "owned", "o\n")
    os.chown(l3 / "owned", 1234, 5678)
    write(l3 / "noted", "n\n")
    os.setxattr(l3 / "noted", "user.note", b"kept")
    for d in ("d1", "d2", "d3", "d4", "d5", "d6"):
        write(l3 / d / "old", f"{d}/old from l3\n")
        write(l3 / d / "deep" / "leaf", f"{d}/deep/leaf\n")
    write(l3 / "shadowdir" / "inside", "hidden by a file above\n")
    write(l3 / "shadowfile", "hidden by a dir above\n")
    os.mkfifo(l3 / "fifo")
    os.symlink("/etc/passwd", l3 / "abs")
    os.symlink("a", l3 / "rel")
    os.symlink("nowhere/at/all", l3 / "dangling")
    os.symlink("../../..", l3 / "up")
    os.symlink("/etc", l3 / "etc")
    write(l3 / "keep" / "k", "kept\n")
    (l3 / "empty").mkdir()
    # middle layer: every whiteout and opaque form
    os.mknod(l2 / "a", stat.S_IFCHR, 0)  # char-device whiteout
    write(l2 / ".wh.b", "")  # OCI whiteout file
    write(l2 / "d1" / OPAQUE_MARKER, "")  # OCI opaque marker
    write(l2 / "d1" / "new", "d1/new from l2\n")
    (l2 / "d2").mkdir()
    os.setxattr(l2 / "d2", USER_OPAQUE, b"y")
    write(l2 / "d2" / "new", "d2/new from l2\n")
    (l2 / "d3").mkdir()
    os.setxattr(l2 / "d3", TRUSTED_OPAQUE, b"y")
    (l2 / "d4").mkdir()
    os.setxattr(l2 / "d4", FUSEOVERLAY_OPAQUE, b"y")
    write(l2 / "d4" / "new", "d4/new from l2\n")
    write(l2 / "d5" / ".wh.old", "")  # whiteout inside a merged dir
    os.mknod(l2 / "d5" / "deep", stat.S_IFCHR, 0)  # a whole subtree whited out
    write(l2 / "d5" / "mid", "d5/mid from l2\n")
    write(l2 / "shadowdir", "a file over a dir\n")
    write(l2 / "shadowfile" / "inside", "a dir over a file\n")
    write(l2 / "c", "c from l2\n", 0o640)
    # top layer
    write(l1 / "c", "c from l1\n")
    write(l1 / "d6" / "top", "d6/top from l1\n")
    write(l1 / ".wh.nonexistent", "")
    write(l1 / ".wh.keep", "")
    write(l1 / "keep" / "again", "recreated over a whiteout in the same layer\n")
    os.symlink("/", l1 / "root")
    return [l1, l2, l3]


def buildah_limits() -> tuple[str, ...]:
    """buildah's RUN (Debian 13's) raises the open-file limit to 1048576 unless told otherwise, and fails where the
    hard limit is lower and may not be raised: the oracle runs with the limit this process has now."""
    flags = []
    for name, limit in (("nofile", resource.RLIMIT_NOFILE),):
        hard = resource.getrlimit(limit)[1]
        value = "1048576" if hard == resource.RLIM_INFINITY else str(hard)
        flags.append(f"--ulimit={name}={value}:{value}")
    return tuple(flags)
