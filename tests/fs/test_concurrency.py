"""Requests are not held up by a slow copy-up: a large file's data is copied while others are served."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.fs.conftest import Mounter
from tests.fs.gatefs import content
from tests.support import is_mounted, wait_until, write
from unionfs.copyup import THREADED_COPY_MIN

SIZE = 4 * THREADED_COPY_MIN  # a copy-up of this size copies its data off the request loop
ROOT = Path(__file__).resolve().parents[2]


class Gate:
    """A gatefs mount (see gatefs.py), as a context manager: a lower layer whose file's data flows only once
    `open` is called. Leaving it opens the gate, unmounts and reaps the daemon whatever happened."""

    def __init__(self, base: Path) -> None:
        self.mountpoint = base / "gate"
        self.state = base / "gate-state"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gate:
        self.mountpoint.mkdir()
        self.state.mkdir()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fs.gatefs", str(self.mountpoint), str(SIZE), str(self.state)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(lambda: (self.state / "mounted").exists() and is_mounted(self.mountpoint), "gatefs mounted")
        except BaseException:
            self.__exit__()
            raise
        return self

    def wait_reading(self) -> None:
        wait_for(lambda: (self.state / "reading").exists(), "a copy-up reading the gated file")

    def open(self) -> None:
        (self.state / "open").touch()

    def served(self) -> int:
        return int((self.state / "served").read_text())

    def __exit__(self, *exc: object) -> None:
        self.open()
        subprocess.run(["fusermount3", "-u", str(self.mountpoint)], capture_output=True)
        if self.process is not None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if is_mounted(self.mountpoint):
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    if not wait_until(condition, 30.0):
        raise AssertionError(f"timed out waiting for {what}")


def in_thread(action: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


@contextlib.contextmanager
def over_a_gate(mounter: Mounter, tmp_path: Path) -> Iterator[tuple[Gate, Path]]:
    """A union mount (upper `upper`, work dir `work`) of `lower` over a gate; the union mount, which holds the
    gate busy, is unmounted first, after the gate is opened so that nothing still waits on it."""
    write(tmp_path / "lower" / "dir" / "small", "small\n")
    (tmp_path / "upper").mkdir()
    (tmp_path / "work").mkdir()
    with Gate(tmp_path) as gate:
        mount = mounter([tmp_path / "lower", gate.mountpoint], tmp_path / "upper", tmp_path / "work")
        try:
            yield gate, mount.mountpoint
        finally:
            gate.open()
            mount.close()


def test_other_requests_go_on_while_a_large_file_is_copied_up(mounter: Mounter, tmp_path: Path) -> None:
    with over_a_gate(mounter, tmp_path) as (gate, m):
        writer = in_thread(lambda: append(m / "big", b"first"))
        gate.wait_reading()  # the copy-up of big is under way and cannot finish

        seen: list[object] = []

        def others() -> None:
            seen.append(os.stat(m / "dir" / "small").st_size)
            seen.append(sorted(os.listdir(m / "dir")))
            seen.append((m / "dir" / "small").read_text())
            write(m / "dir" / "new", "made meanwhile\n")
            seen.append(sorted(os.listdir(m)))

        other = in_thread(others)
        other.join(timeout=30)
        assert not other.is_alive(), "requests for other files waited for the copy-up to finish"
        assert seen == [6, ["small"], "small\n", ["big", "dir"]]
        assert writer.is_alive(), "the copy-up finished while its data could not be read"

        second = in_thread(lambda: append(m / "big", b"second"))  # waits for the copy-up under way
        time.sleep(0.2)
        gate.open()
        writer.join(timeout=60)
        second.join(timeout=60)
        assert not writer.is_alive() and not second.is_alive()

        data = (m / "big").read_bytes()
        assert data[:SIZE] == content(SIZE)
        assert data[SIZE:] in (b"firstsecond", b"secondfirst")
        assert gate.served() == SIZE, "the file's data was copied up more than once"
        assert (tmp_path / "upper" / "big").read_bytes() == data
        assert os.listdir(tmp_path / "work" / "unionfs") == []  # nothing staged is left behind


def test_large_lower_files_keep_their_data_through_every_kind_of_copy_up(mounter: Mounter, tmp_path: Path) -> None:
    data = os.urandom(THREADED_COPY_MIN + 12345)  # copied up off the request loop
    lower, upper, work = tmp_path / "lower", tmp_path / "upper", tmp_path / "work"
    for name in ("cut", "linked", "moved", "shared", "written"):
        write(lower / name, data)
    os.link(lower / "shared", lower / "shared-too")
    (lower / "dir").mkdir()
    upper.mkdir()
    work.mkdir()
    mount = mounter([lower], upper, work)
    m = mount.mountpoint

    os.truncate(m / "cut", 1000)
    os.link(m / "linked", m / "linked-too")
    append(m / "linked-too", b"+")
    os.rename(m / "moved", m / "dir" / "moved")
    append(m / "shared", b"+")
    with open(m / "written", "r+b") as f:
        f.seek(5)
        f.write(b"XY")
    expected = {
        "cut": data[:1000],
        "linked": data + b"+",
        "linked-too": data + b"+",
        "dir/moved": data,
        "shared": data + b"+",
        "shared-too": data + b"+",
        "written": data[:5] + b"XY" + data[7:],
    }
    for when in ("mounted", "remounted"):
        for name, want in expected.items():
            assert (m / name).read_bytes() == want, f"{name}, {when}"
        assert os.stat(m / "shared").st_ino == os.stat(m / "shared-too").st_ino
        assert not (m / "moved").exists()
        mount.remount()
    assert os.listdir(work / "unionfs") == []


def test_a_file_removed_while_its_data_is_copied_is_not_brought_back(mounter: Mounter, tmp_path: Path) -> None:
    with over_a_gate(mounter, tmp_path) as (gate, m):
        failures: list[OSError] = []

        def write_to_big() -> None:
            try:
                append(m / "big", b"late")
            except OSError as exc:
                failures.append(exc)

        writer = in_thread(write_to_big)
        gate.wait_reading()
        os.unlink(m / "big")  # while the copy-up waits for its data
        gate.open()
        writer.join(timeout=60)
        assert not writer.is_alive()
        assert [type(exc) for exc in failures] == [FileNotFoundError]
        assert not (m / "big").exists()
        assert not (tmp_path / "upper" / "big").is_file()  # a whiteout at most, never the copied file
        assert os.listdir(tmp_path / "work" / "unionfs") == []
