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
        """Unmount and wait for the daemon to exit (killing it if it will not)."""
        if self.mountpoint in mounted_points():
            done = subprocess.run(
                [sys.executable, "-m", "unionfs", "umount", self.mountpoint],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0 and self.mountpoint in mounted_points():
                raise MountError(done.stderr.strip().removeprefix("unionfs: error: "))
        if self.pid is not None:
            reap(self.pid, timeout)
            self.pid = None

    def __enter__(self) -> UnionMount:
        return self.mount()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.unmount()


def reap(pid: int, timeout: float = 10.0) -> None:
    """Wait for a daemon to exit after its unmount; kill it if it does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


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
