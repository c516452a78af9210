"""Opening a file for reading starts reading its data ahead, as the kernel would at its first read: a cold
read then finds the data on its way (bench/NOTES.md, "Cold reads")."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.fs.conftest import Mounter
from tests.support import wait_until

pytestmark = pytest.mark.skipif(shutil.which("fincore") is None, reason="fincore (util-linux) is not installed")


def resident_pages(path: Path) -> int:
    done = subprocess.run(
        ["fincore", "--raw", "--noheadings", "--output", "PAGES", str(path)], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[0])


def evicted(path: Path) -> None:
    """`path`'s data out of the page cache (written back first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.parametrize("where", ["lower", "upper"])
def test_opening_for_reading_reads_the_first_window_ahead(mounter: Mounter, tmp_path: Path, where: str) -> None:
    lower, upper, work = tmp_path / "lower", tmp_path / "upper", tmp_path / "work"
    for d in (lower, upper, work):
        d.mkdir()
    data = tmp_path / where / "data"
    data.write_bytes(os.urandom(1 << 20))
    mount = mounter([lower], upper, work)
    evicted(data)
    if resident_pages(data):
        pytest.skip("this filesystem keeps the pages cached whatever it is told")
    fd = os.open(mount.mountpoint / "data", os.O_RDONLY)  # opened, nothing read
    try:
        assert wait_until(lambda: resident_pages(data) > 0, 5), "nothing was read ahead"
        time.sleep(0.2)
        assert resident_pages(data) <= 128 * 1024 // os.sysconf("SC_PAGE_SIZE")  # the first window, no more
    finally:
        os.close(fd)
