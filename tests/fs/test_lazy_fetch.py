"""Lazy layers through a real mount (unionfs/fetch.py), with a fetcher whose fetch a test holds: a fetch under way
(a large download) runs beside the daemon's request loop, so every other request is answered meanwhile."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fs.conftest import Mounter
from tests.support import UNIONFS, is_mounted
from unionfs import FETCH_XATTR

ROOT = Path(__file__).resolve().parents[2]
FETCHER = "fetcher=tests.fs.stubfetcher.from_spec"


def placeholder(layer: Path, name: str, data: bytes, store: Path) -> None:
    """`layer/name`: a sparse file of the data's size, whose data the fetcher gives from `store/name`."""
    (store / name).write_bytes(data)
    with open(layer / name, "wb") as f:
        f.truncate(len(data))
    os.setxattr(layer / name, FETCH_XATTR, name.encode())


@pytest.fixture
def lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the daemon imports the fetcher
    layer, store = tmp_path / "layer", tmp_path / "store"
    layer.mkdir()
    store.mkdir()
    placeholder(layer, "big", os.urandom(8 << 20), store)
    placeholder(layer, "other", b"other data\n", store)
    (layer / "here").write_bytes(b"local data\n")
    (layer / "dir").mkdir()
    return layer, store


def timed(call: Callable[[], object]) -> float:
    start = time.monotonic()
    call()
    return time.monotonic() - start


def append(path: Path) -> bytes:
    with open(path, "ab") as f:
        f.write(b"!")
    return path.read_bytes()


@pytest.mark.parametrize(
    ("upper", "first"),
    [(False, "read"), (True, "read"), (True, "copy-up")],
    ids=["read-only", "with-upper", "copy-up"],
)
def test_requests_are_answered_while_a_fetch_is_under_way(
    mounter: Mounter, lazy: tuple[Path, Path], tmp_path: Path, upper: bool, first: str
) -> None:
    """`first` opens the big lazy file to read it, or (copy-up) to append to it."""
    layer, store = lazy
    options = [FETCHER, f"fetchspec={store}"]
    if upper:
        (tmp_path / "upper").mkdir()
        (tmp_path / "work").mkdir()
        mnt = mounter([layer], tmp_path / "upper", tmp_path / "work", options).mountpoint
    else:
        mnt = mounter([layer], options=options).mountpoint
    (store / "hold-big").touch()
    got: dict[str, bytes] = {}
    use: Callable[[Path], bytes] = append if first == "copy-up" else Path.read_bytes
    reader = threading.Thread(target=lambda: got.update(big=use(mnt / "big")))
    try:
        reader.start()
        deadline = time.monotonic() + 30
        while not (store / "started-big").exists():
            assert time.monotonic() < deadline, "the fetch of big never started"
            time.sleep(0.02)
        answers = {
            "stat of the file being fetched": timed(lambda: os.stat(mnt / "big")),
            "stat of another file": timed(lambda: os.stat(mnt / "here")),
            "read of a local file": timed(lambda: (mnt / "here").read_bytes()),
            "read of another lazy file": timed(lambda: (mnt / "other").read_bytes()),
            "listing": timed(lambda: os.listdir(mnt)),
            "lookup of a missing name": timed(lambda: (mnt / "missing").exists()),
        }
        assert (mnt / "other").read_bytes() == b"other data\n"
        assert reader.is_alive(), "the fetch was not held"
        slow = {what: round(took, 2) for what, took in answers.items() if took > 3}
        assert not slow, f"waited for the fetch: {slow}"
    finally:
        (store / "hold-big").unlink()
        reader.join(60)
    assert got["big"] == (store / "big").read_bytes() + (b"!" if first == "copy-up" else b"")


@pytest.mark.parametrize(
    ("fetcher", "spec", "said"),
    [
        ("nosuch_fetchers.make", "x", "-o fetcher=nosuch_fetchers.make: no module 'nosuch_fetchers'"),
        ("json.nosuch", "x", "-o fetcher=json.nosuch: module 'json' has no 'nosuch'"),
        ("json", "x", "-o fetcher=json: not MODULE.CALLABLE"),
        ("json.loads", "not json", "-o fetcher=json.loads: loads(fetchspec='not json') failed: Expecting value"),
        ("json.loads", "{}", "-o fetcher=json.loads: loads(...) gave a dict, not a fetcher"),
        ("imagebuild.lazy.fetcher.from_spec", "/nonexistent/spec", "from_spec(fetchspec='/nonexistent/spec') failed"),
    ],
)
def test_a_fetcher_that_cannot_be_had_fails_the_mount_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fetcher: str, spec: str, said: str
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    layer, mnt = tmp_path / "layer", tmp_path / "mnt"
    layer.mkdir()
    mnt.mkdir()
    option = f"lowerdir={layer},fetcher={fetcher},fetchspec={spec}"
    done = subprocess.run([*UNIONFS, "mount", "-o", option, str(mnt)], capture_output=True, text=True, timeout=60)
    try:
        assert done.returncode != 0
        (line,) = done.stderr.splitlines()
        assert said in line, line
        assert "Traceback" not in done.stderr and "before the mount was ready" not in line
        assert not is_mounted(mnt)
    finally:
        if is_mounted(mnt):
            subprocess.run([*UNIONFS, "umount", str(mnt)], capture_output=True, timeout=60)
