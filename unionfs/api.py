"""The public Python API other programs (imagebuild) use to mount and unmount: the CLI in a subprocess.

The daemon runs in its own process, exactly as a user's `unionfs mount` does, so callers never import pyfuse3
and a crash of the filesystem never takes the caller down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from types import TracebackType

from .config import mounted_points
from .unmount import UnmountError, unmount


class MountError(Exception):
    """The mount or unmount failed; the message is the CLI's one-line explanation."""


def _escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


class UnionMount:
    """A running union mount: `lowers` top first, an optional `upper`/`work` pair for writes."""

    def __init__(
        self,
        mountpoint: str,
        lowers: Sequence[str],
        upper: str | None = None,
        work: str | None = None,
        options: Sequence[str] = (),
    ) -> None:
        self.mountpoint = os.path.realpath(mountpoint)
        option = "lowerdir=" + ":".join(_escape(os.fspath(p)) for p in lowers)
        if upper is not None and work is not None:
            option += f",upperdir={_escape(upper)},workdir={_escape(work)}"
        self.options = ",".join([option, *options])
        self.pid: int | None = None

    def mount(self) -> UnionMount:
        with tempfile.TemporaryDirectory(prefix="unionfs-") as tmp:
            pidfile = os.path.join(tmp, "pid")
            done = subprocess.run(
                [sys.executable, "-m", "unionfs", "mount", "-o", self.options, "--pidfile", pidfile, self.mountpoint],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise MountError(done.stderr.strip().removeprefix("unionfs: error: "))
            with open(pidfile, encoding="utf-8") as f:
                self.pid = int(f.read())
        return self

    def unmount(self, timeout: float = 30.0) -> None:
        """Unmount and wait for the daemon to exit (killing it if it will not). Whatever happens, neither the
        mount nor the daemon is left: when the unmount fails, the daemon is killed and its dead mount detached,
        and MountError says why the unmount failed."""
        try:
            if self.mountpoint in mounted_points():
                unmount(self.mountpoint)
        except UnmountError as exc:
            self._remove_by_force(str(exc))
        if self.pid is not None:
            reap(self.pid, timeout)
            self.pid = None

    def _remove_by_force(self, reason: str) -> None:
        pids = [self.pid] if self.pid is not None else daemon_pids(self.mountpoint)
        for pid in pids:
            kill(pid)
        self.pid = None
        if self.mountpoint in mounted_points():
            try:
                unmount(self.mountpoint, lazy=True)
            except UnmountError as exc:
                raise MountError(f"{reason}; detaching it failed too: {exc}") from None
        raise MountError(f"{reason}; its daemon was stopped and the mount detached")

    def __enter__(self) -> UnionMount:
        return self.mount()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.unmount()


def _gone(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def reap(pid: int, timeout: float = 10.0) -> None:
    """Wait for a daemon to exit after its unmount; kill it if it does not."""
    if not _wait_gone(pid, timeout):
        kill(pid)


def kill(pid: int, timeout: float = 10.0) -> None:
    """Kill a daemon and wait until it is gone: its mount, if any is left, is dead from then on."""
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    _wait_gone(pid, timeout)


def daemon_pids(mountpoint: str) -> list[int]:
    """The daemons serving `mountpoint` (an absolute path without symlinks), found by their command lines
    (`python -m unionfs ... MOUNTPOINT` or `unionfs ... MOUNTPOINT`), for a caller that does not know the pid."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [os.fsdecode(a) for a in f.read().split(b"\0")[:-1]]
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        ours = argv[1:3] == ["-m", "unionfs"] or (len(argv) > 1 and os.path.basename(argv[1]) == "unionfs")
        if not ours or len(argv) < 3:
            continue
        given = os.path.normpath(os.path.join(cwd, argv[-1]))  # resolved without entering the mount itself
        if os.path.join(os.path.realpath(os.path.dirname(given)), os.path.basename(given)) == mountpoint:
            found.append(int(entry))
    return found


@contextlib.contextmanager
def mounted(
    mountpoint: str,
    lowers: Sequence[str],
    upper: str | None = None,
    work: str | None = None,
    options: Sequence[str] = (),
) -> Iterator[UnionMount]:
    """`with mounted(...) as m:` mounts, and always unmounts on the way out."""
    mount = UnionMount(mountpoint, lowers, upper, work, options).mount()
    try:
        yield mount
    finally:
        mount.unmount()
