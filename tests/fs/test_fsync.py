"""`fsync=0`: fsync(2) on the mount syncs nothing (a throw-away upper's choice); by default it syncs the upper file.

What reaches the disk is counted where it happens: the daemon's own fsync and fdatasync calls, traced with strace.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.fs.conftest import Mounter

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")


def traced_syncs(mounter: Mounter, tmp_path: Path, options: list[str]) -> list[str]:
    """Mount, write a file through the mount and fsync it three times and fdatasync it once (a lower file too,
    after copying it up): the sync calls the daemon made meanwhile."""
    lower, upper, work = tmp_path / "lower", tmp_path / "upper", tmp_path / "work"
    for d in (lower, upper, work):
        d.mkdir()
    (lower / "old").write_bytes(b"lower data\n")
    mount = mounter([lower], upper, work, options)
    assert mount.pid is not None
    log = tmp_path / "strace.log"
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(log), "-p", str(mount.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        threads = [Path(f"/proc/{mount.pid}/task/{t}/status") for t in os.listdir(f"/proc/{mount.pid}/task")]
        deadline = time.monotonic() + 20
        while not all("TracerPid:\t0\n" not in t.read_text() for t in threads):
            assert time.monotonic() < deadline, "strace did not attach"
            assert tracer.poll() is None, tracer.stderr.read() if tracer.stderr else ""
            time.sleep(0.05)
        for name, flags in (("new", os.O_CREAT | os.O_WRONLY), ("old", os.O_WRONLY | os.O_APPEND)):
            fd = os.open(mount.mountpoint / name, flags, 0o644)
            try:
                os.write(fd, b"data\n")
                for _ in range(3):
                    os.fsync(fd)
                os.fdatasync(fd)
            finally:
                os.close(fd)
    finally:
        tracer.terminate()
        tracer.wait(timeout=20)
    assert (mount.mountpoint / "new").read_bytes() == b"data\n"
    assert (upper / "old").read_bytes() == b"lower data\ndata\n"
    return [line for line in log.read_text().splitlines() if "sync(" in line]


def test_by_default_every_fsync_reaches_the_upper(mounter: Mounter, tmp_path: Path) -> None:
    calls = traced_syncs(mounter, tmp_path, [])
    # each file: three fsyncs and one fdatasync passed on; the copy-up of "old" syncs its staged copy too
    assert sum(bool(re.search(r"\bfdatasync\(", c)) for c in calls) >= 2, calls
    assert sum(bool(re.search(r"\bfsync\(", c)) for c in calls) >= 6, calls


def test_fsync_0_syncs_nothing(mounter: Mounter, tmp_path: Path) -> None:
    assert traced_syncs(mounter, tmp_path, ["fsync=0"]) == []
