"""Requests are not held up by a slow copy-up: a large file's data, or a directory's tree moved by a rename, is
copied while others are served; requests that would change what is being copied wait for it."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fs.conftest import Mounter
from tests.fs.gatefs import content
from tests.support import is_mounted, wait_until, write
from unionfs.datacopy import THREADED_COPY_MIN

SIZE = 4 * THREADED_COPY_MIN  # a copy-up of this size copies its data off the request loop
ROOT = Path(__file__).resolve().parents[2]


class Gate:
    """A gatefs mount (see gatefs.py), as a context manager: a lower layer whose file's data flows only once
    `open` is called (in `directory`, when given). Leaving it opens the gate, unmounts and reaps the daemon
    whatever happened."""

    def __init__(self, base: Path, directory: str | None = None) -> None:
        self.mountpoint = base / "gate"
        self.state = base / "gate-state"
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gate:
        self.mountpoint.mkdir()
        self.state.mkdir()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fs.gatefs", str(self.mountpoint), str(SIZE), str(self.state)]
            + ([self.directory] if self.directory else []),
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
def over_a_gate(
    mounter: Mounter, tmp_path: Path, directory: str | None = None, options: list[str] | None = None
) -> Iterator[tuple[Gate, Path]]:
    """A union mount (upper `upper`, work dir `work`) of `lower` over a gate; the union mount, which holds the
    gate busy, is unmounted first, after the gate is opened so that nothing still waits on it."""
    write(tmp_path / "lower" / "dir" / "small", "small\n")
    (tmp_path / "upper").mkdir()
    (tmp_path / "work").mkdir()
    with Gate(tmp_path, directory) as gate:
        mount = mounter(
            [tmp_path / "lower", gate.mountpoint], tmp_path / "upper", tmp_path / "work", options=options or []
        )
        try:
            yield gate, mount.mountpoint
        finally:
            gate.open()
            mount.close()


def others_go_on(m: Path, name: str) -> None:
    """Requests for other files, reads and changes, complete while a copy is held (they make dir/NAME.moved)."""
    seen: list[object] = []

    def others() -> None:
        seen.append(os.stat(m / "dir" / "small").st_size)
        seen.append((m / "dir" / "small").read_text())
        (m / "dir" / name).write_text("made meanwhile\n")
        os.rename(m / "dir" / name, m / "dir" / f"{name}.moved")
        seen.append(sorted(os.listdir(m / "dir")))

    other = in_thread(others)
    other.join(timeout=30)
    assert not other.is_alive(), "requests for other files waited for a copy to finish"
    assert seen == [6, "small\n", sorted([f"{name}.moved", "small"])]


def test_other_requests_go_on_while_a_large_file_is_copied_up(mounter: Mounter, tmp_path: Path) -> None:
    with over_a_gate(mounter, tmp_path) as (gate, m):
        writer = in_thread(lambda: append(m / "big", b"first"))
        gate.wait_reading()  # the copy-up of big is under way and cannot finish
        others_go_on(m, "new")
        assert sorted(os.listdir(m)) == ["big", "dir"]
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
    write(lower / "tree" / "inside", data)  # a directory moved whole, with a file linked from outside it
    os.link(lower / "tree" / "inside", lower / "outside")
    (lower / "dir").mkdir()
    upper.mkdir()
    work.mkdir()
    mount = mounter([lower], upper, work)
    m = mount.mountpoint

    os.truncate(m / "cut", 1000)
    os.link(m / "linked", m / "linked-too")
    append(m / "linked-too", b"+")
    os.rename(m / "moved", m / "dir" / "moved")
    os.rename(m / "tree", m / "tree-moved")
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
        "tree-moved/inside": data,
        "outside": data,
    }
    for when in ("mounted", "remounted"):
        for name, want in expected.items():
            assert (m / name).read_bytes() == want, f"{name}, {when}"
        assert os.stat(m / "shared").st_ino == os.stat(m / "shared-too").st_ino
        assert os.stat(m / "outside").st_ino == os.stat(m / "tree-moved" / "inside").st_ino
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


def test_a_metacopy_file_is_filled_in_place_while_other_requests_go_on(mounter: Mounter, tmp_path: Path) -> None:
    with over_a_gate(mounter, tmp_path, options=["metacopy=on"]) as (gate, m):
        os.chmod(m / "big", 0o640)  # a metadata-only copy-up: no data read
        assert not (gate.state / "reading").exists()
        upper = tmp_path / "upper" / "big"
        inode, mtime = os.stat(upper).st_ino, os.stat(m / "big").st_mtime_ns
        writer = in_thread(lambda: append(m / "big", b"first"))
        gate.wait_reading()  # the file's data is being filled in and cannot be finished

        others_go_on(m, "new")
        assert os.stat(m / "big").st_size == SIZE  # the file itself still answers
        assert writer.is_alive(), "the fill finished while its data could not be read"
        second = in_thread(lambda: append(m / "big", b"second"))  # waits for the fill under way
        time.sleep(0.2)
        gate.open()
        for thread in (writer, second):
            thread.join(timeout=60)
            assert not thread.is_alive()

        data = (m / "big").read_bytes()
        assert data[:SIZE] == content(SIZE)
        assert data[SIZE:] in (b"firstsecond", b"secondfirst")
        assert gate.served() == SIZE, "the file's data was filled in more than once"
        assert upper.read_bytes() == data
        assert os.stat(upper).st_ino == inode, "filled in a new file, not in place"
        assert not [name for name in os.listxattr(upper) if "metacopy" in name]
        assert stat.S_IMODE(os.stat(m / "big").st_mode) == 0o640
        assert os.stat(m / "big").st_mtime_ns > mtime  # (the appends', not the fill's)


def test_a_truncating_open_waits_for_a_fill_under_way(mounter: Mounter, tmp_path: Path) -> None:
    """A fill writes into the upper file in place: whatever else changes that file waits for it, or the fill
    would write the old data over what came after."""
    with over_a_gate(mounter, tmp_path, options=["metacopy=on"]) as (gate, m):
        os.chmod(m / "big", 0o640)
        shortener = in_thread(lambda: os.truncate(m / "big", SIZE - 1))  # keeps data: fills it first
        gate.wait_reading()
        truncator = in_thread(lambda: (m / "big").write_bytes(b"new"))  # O_TRUNC: no data of its own to copy
        time.sleep(0.2)
        gate.open()
        for thread in (shortener, truncator):
            thread.join(timeout=60)
            assert not thread.is_alive()
        data = (m / "big").read_bytes()
        # "new", and the shortening may have come after it: zeros up to its size; never the old data
        assert data[:3] == b"new" and data[3:] == bytes(len(data) - 3), data[:16]
        assert (tmp_path / "upper" / "big").read_bytes() == data


@pytest.mark.parametrize("change", ["chmod", "utime", "setxattr"])
def test_a_metadata_change_that_copies_data_copies_it_aside(mounter: Mounter, tmp_path: Path, change: str) -> None:
    with over_a_gate(mounter, tmp_path) as (gate, m):  # no metacopy: a chmod copies the file's data up
        changes: dict[str, Callable[[], None]] = {
            "chmod": lambda: os.chmod(m / "big", 0o600),
            "utime": lambda: os.utime(m / "big", ns=(1, 2)),
            "setxattr": lambda: os.setxattr(m / "big", "user.note", b"kept"),
        }
        changer = in_thread(changes[change])
        gate.wait_reading()
        others_go_on(m, "new")
        assert changer.is_alive(), "the copy-up finished while its data could not be read"
        gate.open()
        changer.join(timeout=60)
        assert not changer.is_alive()

        shown: dict[str, Callable[[], object]] = {
            "chmod": lambda: stat.S_IMODE(os.stat(m / "big").st_mode) == 0o600,
            "utime": lambda: os.stat(m / "big").st_mtime_ns == 2,
            "setxattr": lambda: os.getxattr(m / "big", "user.note") == b"kept",
        }
        assert shown[change]()
        assert (tmp_path / "upper" / "big").read_bytes() == content(SIZE)
        assert os.listdir(tmp_path / "work" / "unionfs") == []


def test_a_directory_rename_copies_its_tree_while_requests_elsewhere_go_on(mounter: Mounter, tmp_path: Path) -> None:
    write(tmp_path / "lower" / "tree" / "small", "small\n")
    with over_a_gate(mounter, tmp_path, directory="tree") as (gate, m):
        # The kernel holds the directory a rename changes locked for its whole length: lookups of names not yet
        # cached there wait for it, whatever the filesystem. Requests elsewhere use names it knows already.
        assert sorted(os.listdir(m)) == ["dir", "tree"]
        assert os.listdir(m / "tree") and os.listdir(m / "dir")
        mover = in_thread(lambda: os.rename(m / "tree", m / "moved"))
        gate.wait_reading()  # the rename is copying tree/big (from the gate) and cannot finish

        others_go_on(m, "new")
        assert sorted(os.listdir(m / "tree")) == ["big", "small"]  # reads inside the tree go on too
        assert (m / "tree" / "small").read_text() == "small\n"
        assert mover.is_alive(), "the rename finished while the tree's data could not be read"

        def overwrite(name: str, data: bytes) -> None:
            with open(m / "tree" / name, "wb") as f:  # (a plain open: the tree exists until the rename ends)
                f.write(data)

        changers = [
            in_thread(lambda: overwrite("small", b"changed\n")),
            in_thread(lambda: overwrite("added", b"added\n")),
            in_thread(lambda: os.chmod(m / "tree", 0o700)),
        ]
        time.sleep(0.3)
        assert all(t.is_alive() for t in changers), "a change inside the tree did not wait for the rename"
        gate.open()
        for thread in (mover, *changers):
            thread.join(timeout=60)
            assert not thread.is_alive()

        assert sorted(os.listdir(m)) == ["dir", "moved"]
        assert sorted(os.listdir(m / "moved")) == ["added", "big", "small"]  # nothing changed meanwhile was lost
        assert (m / "moved" / "small").read_text() == "changed\n"
        assert (m / "moved" / "added").read_text() == "added\n"
        assert stat.S_IMODE(os.stat(m / "moved").st_mode) == 0o700
        assert (m / "moved" / "big").read_bytes() == content(SIZE)
        assert gate.served() == SIZE
        assert (tmp_path / "upper" / "moved" / "big").stat().st_size == SIZE
        assert os.listdir(tmp_path / "work" / "unionfs") == []


def test_directory_renames_racing_writes_creates_and_chmods_lose_nothing_and_never_hang(
    mounter: Mounter, tmp_path: Path
) -> None:
    """Renames of merged directories (whose trees are copied by worker threads), of directories inside them and
    back, while other threads append to files in them, create files in them and chmod them: every change that
    succeeded is there at the end, and again after a remount."""
    lower, below, upper, work = (tmp_path / n for n in ("lower", "below", "upper", "work"))
    trees = 6
    big = os.urandom(THREADED_COPY_MIN + 4096)  # each tree's copy waits for a worker thread
    for k in range(trees):
        write(lower / f"t{k}" / "big", big)
        for j in range(3):
            write(lower / f"t{k}" / f"w{j}", b"")
            write(lower / f"t{k}" / "sub" / f"s{j}", b"s")
        for j in range(100):
            write(below / f"t{k}" / "many" / f"m{j}", b"m")
        write(below / f"t{k}" / "sub" / "from-below", b"b")  # sub is merged too
    upper.mkdir()
    work.mkdir()
    mount = mounter([lower, below], upper, work)
    m = mount.mountpoint
    stop = time.monotonic() + 6
    appended = [[0] * 3 for _ in range(trees)]
    created: list[set[str]] = [set() for _ in range(trees)]
    unexpected: list[str] = []

    def where(k: int) -> Path:
        for name in (f"t{k}", f"u{k}"):
            if (m / name).exists():
                return m / name
        raise FileNotFoundError(f"tree {k}")

    def attempt(action: Callable[..., object], *args: object) -> bool:
        try:
            action(*args)
            return True
        except FileNotFoundError:
            return False  # raced a rename: the name was gone when the kernel looked it up
        except OSError as exc:
            unexpected.append(f"{action.__name__}{args}: {exc}")
            return False

    def move_tree(k: int) -> None:
        tree = where(k)
        os.rename(tree, m / (f"u{k}" if tree.name.startswith("t") else f"t{k}"))

    def move_sub(k: int, old: str, new: str) -> None:
        os.rename(where(k) / old, where(k) / new)

    def append_one(k: int, j: int) -> None:
        with open(where(k) / f"w{j}", "ab") as f:
            f.write(b"+")
        appended[k][j] += 1

    def create(k: int, name: str) -> None:
        (where(k) / name).write_bytes(b"c")
        created[k].add(name)

    def chmod(k: int, mode: int) -> None:
        os.chmod(where(k) / "big", mode)

    def renamer() -> None:
        k = 0
        while time.monotonic() < stop:
            attempt(move_tree, k)
            attempt(move_sub, k, "sub", "sub2")
            attempt(move_sub, k, "sub2", "sub")
            k = (k + 1) % trees

    def appender(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            attempt(append_one, rng.randrange(trees), rng.randrange(3))

    def creator(seed: int) -> None:
        rng = random.Random(seed)
        for n in itertools.count():
            if time.monotonic() >= stop:
                break
            attempt(create, rng.randrange(trees), f"c{seed}-{n}")
            attempt(chmod, rng.randrange(trees), 0o600 | rng.randrange(2) * 0o40)

    threads = [in_thread(renamer), *(in_thread(lambda s=s: appender(s)) for s in range(2))]
    threads += [in_thread(lambda s=s: creator(s)) for s in range(2)]
    for thread in threads:
        thread.join(timeout=120)
    assert not [t for t in threads if t.is_alive()], "requests hung"
    assert unexpected == []
    assert sum(map(sum, appended)) > 0 and sum(map(len, created)) > 0

    for when in ("mounted", "remounted"):
        for k in range(trees):
            tree = where(k)
            names = set(os.listdir(tree))
            assert created[k] <= names, f"tree {k}, {when}: lost {sorted(created[k] - names)}"
            for j in range(3):
                assert (tree / f"w{j}").read_bytes() == b"+" * appended[k][j], f"tree {k} w{j}, {when}"
            assert (tree / "big").read_bytes() == big
            sub = tree / ("sub" if (tree / "sub").exists() else "sub2")
            assert sorted(os.listdir(sub)) == ["from-below", "s0", "s1", "s2"]
            assert len(os.listdir(tree / "many")) == 100
        assert os.listdir(work / "unionfs") == []
        mount.remount()
