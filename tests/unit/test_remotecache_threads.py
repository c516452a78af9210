"""`--cache-from` lookups from stages built at once (scheduler.py runs each stage in its own thread): a REF that
fails is dropped once and said once, hits are all counted, and every thread gets its own key's entry."""

from __future__ import annotations

import threading
from pathlib import Path

from imagebuild.builder import remotecache
from imagebuild.errors import BuildError
from imagebuild.oci import Descriptor, mediatypes
from imagebuild.store.images import Layer, Store
from imagebuild.transport import buildcache

THREADS = 8


class FakeCache:
    """A REF as the lookup sees it; every fetch waits until all threads are fetching, so they overlap."""

    def __init__(self, ref: str, barrier: threading.Barrier, fails: bool) -> None:
        self.ref = ref
        self.barrier = barrier
        self.fails = fails
        self.asked: list[str] = []

    def fetch(self, store: Store, key: str) -> buildcache.Record | None:  # noqa: ARG002 (a cache source's signature)
        self.asked.append(key)
        self.barrier.wait(timeout=10)
        if self.fails:
            raise BuildError(f"--cache-from {self.ref}: layer lost")
        blob = Descriptor(media_type=mediatypes.OCI_LAYER_GZIP, digest="sha256:" + key, size=1)
        return buildcache.Record(key, Layer("sha256:" + key, blob), "2026-01-01T00:00:00Z")


def lookups(sources: remotecache.Sources, keys: list[str]) -> dict[str, object]:
    found: dict[str, object] = {}
    errors: list[BaseException] = []

    def one(key: str) -> None:
        try:
            found[key] = sources.lookup(key)
        except BaseException as exc:  # noqa: BLE001 (the test reports any failure of a thread)
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    return found


def test_a_failing_ref_is_dropped_and_said_once_while_stages_look_up_at_once(tmp_path: Path) -> None:
    warnings: list[str] = []
    sources = remotecache.Sources(Store(str(tmp_path / "store")), [], False, warnings.append)
    barrier = threading.Barrier(THREADS)
    broken = FakeCache("127.0.0.1:5000/c/broken:1", barrier, fails=True)
    good = FakeCache("127.0.0.1:5000/c/good:1", threading.Barrier(THREADS), fails=False)
    sources.caches = [broken, good]  # type: ignore[list-item]
    keys = [f"{i:064x}" for i in range(THREADS)]
    found = lookups(sources, keys)
    assert len(warnings) == 1 and "layer lost" in warnings[0] and "not asking 127.0.0.1:5000/c/broken:1" in warnings[0]
    assert sources.caches == [good]
    assert sources.hits == THREADS
    for key in keys:  # each thread got its own step's entry, from the REF that has it
        entry = found[key]
        assert isinstance(entry, dict) and entry["diff_id"] == "sha256:" + key
    assert sorted(good.asked) == keys
