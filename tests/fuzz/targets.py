"""The three filesystems an example drives: the system under test, the kernel-overlayfs oracle and the model.

Each lives in its own directory: `layers/`, `upper/`, `work/` and a mount point three private directories
deep (`j1/j2/j3/mnt`), so a symlink an operation moved above its origin resolves into that target's own
sandbox, the same way in every target, and never to anything outside the example.

The system under test is our mount (through the CLI, as users make it) or, with UNIONFS_FUZZ_TARGET, any
command that takes the fuse-overlayfs arguments `-o lowerdir=...,upperdir=...,workdir=... MOUNTPOINT`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from tests.fuzz.layertree import Dir, merge, write_kernel_layer, write_layer
from tests.support import UnionMount, is_mounted

#: e.g. "fuse-overlayfs": mount the system under test with this command instead of ours.
TARGET_ENV = "UNIONFS_FUZZ_TARGET"
JUNK = ("j1", "j2", "j3")


def other_target() -> list[str] | None:
    command = os.environ.get(TARGET_ENV, "").strip()
    return shlex.split(command) if command else None


class Target:
    """A directory tree the operations run in: `root` is where paths are resolved."""

    name = "target"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base.joinpath(*JUNK, "mnt")
        self.root.mkdir(parents=True)

    def open(self) -> None:
        """Make `root` usable (mount)."""

    def close(self) -> None:
        """Unmount whatever `open` mounted; safe to call twice, and after a failed open."""

    def remount(self) -> None:
        self.close()
        self.open()


class Model(Target):
    """A plain directory holding the merged tree: POSIX as a user expects it, no layers at all."""

    name = "model"

    def __init__(self, base: Path, layers: list[Dir]) -> None:
        super().__init__(base)
        write_layer(str(self.root), merge(layers))


class Overlay(Target):
    """A union of lower layers with an upper and a work dir."""

    def __init__(self, base: Path, layers: list[Dir], *, kernel_form: bool) -> None:
        super().__init__(base)
        self.lowers: list[Path] = []
        for i, layer in enumerate(layers):
            path = base / "layers" / f"l{i}"
            (write_kernel_layer if kernel_form else write_layer)(str(path), layer)
            self.lowers.append(path)
        self.upper, self.work = base / "upper", base / "work"
        self.upper.mkdir()
        self.work.mkdir()

    @property
    def options(self) -> str:
        return f"lowerdir={':'.join(map(str, self.lowers))},upperdir={self.upper},workdir={self.work}"


class Ours(Overlay):
    name = "unionfs"

    def __init__(self, base: Path, layers: list[Dir]) -> None:
        super().__init__(base, layers, kernel_form=False)
        self.mount = UnionMount(self.root, self.lowers, self.upper, self.work)

    def open(self) -> None:
        self.mount.open()

    def close(self) -> None:
        self.mount.close()

    def log(self) -> str:
        return self.mount.daemon_log()


class Command(Overlay):
    """Another union filesystem mounted by a command taking fuse-overlayfs's arguments."""

    def __init__(self, base: Path, layers: list[Dir], command: list[str]) -> None:
        super().__init__(base, layers, kernel_form=True)
        self.command = command
        self.name = os.path.basename(command[0])

    def open(self) -> None:
        done = subprocess.run(
            [*self.command, "-o", self.options, str(self.root)], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0 or not is_mounted(self.root):
            raise AssertionError(f"{self.command[0]} could not mount: {done.stderr.strip()}")

    def close(self) -> None:
        unmount(self.root, ["fusermount3", "-u"], ["fusermount3", "-uz"])


class Kernel(Overlay):
    """Kernel overlayfs with its defaults pinned (no index, no redirect_dir, no metacopy): the oracle."""

    name = "kernel overlayfs"

    def __init__(self, base: Path, layers: list[Dir]) -> None:
        super().__init__(base, layers, kernel_form=True)

    def open(self) -> None:
        options = self.options + ",index=off,redirect_dir=off,metacopy=off,xino=off"
        done = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise OSError(f"kernel overlayfs cannot be mounted here: {done.stderr.strip()}")

    def close(self) -> None:
        unmount(self.root, ["umount"], ["umount", "-l"])


def unmount(point: Path, command: list[str], lazy: list[str]) -> None:
    for _ in range(50):
        if not is_mounted(point):
            return
        subprocess.run([*command, str(point)], capture_output=True)
        if is_mounted(point):
            time.sleep(0.05)
    if is_mounted(point):
        subprocess.run([*lazy, str(point)], capture_output=True)


def remove(base: Path) -> None:
    """Delete an example's directory, never descending into a mount still there."""
    for dirpath, dirnames, _ in os.walk(base):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if os.path.ismount(path):
                raise AssertionError(f"{path} is still mounted: not deleting {base}")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(base)


_kernel_reason: list[str] = []


def kernel_unavailable(scratch: Path) -> str | None:
    """None when kernel overlayfs can be mounted here (checked once), else why not."""
    if _kernel_reason:
        return _kernel_reason[0] or None
    reason = ""
    if os.geteuid() != 0:
        reason = "kernel overlayfs needs root to mount"
    else:
        probe = scratch / "probe"
        try:
            kernel = Kernel(probe, [Dir()])
            try:
                kernel.open()
            finally:
                kernel.close()
        except OSError as exc:
            reason = str(exc)
        finally:
            remove(probe)
    _kernel_reason.append(reason)
    return reason or None
