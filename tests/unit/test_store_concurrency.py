"""The store under stages that build at the same time: the same layer stored by two at once, images and tags
registered at once (in threads, and in processes sharing the store): nothing fails, nothing is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from imagebuild.oci import ContainerConfig, ImageConfig, RootFS
from imagebuild.store.images import Layer, Store


def at_once(count: int, work: Callable[[int], object]) -> list[object]:
    """Run work(0..count-1) in threads that start together; their results, or the exceptions they raised."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 (whatever a thread raised is its result, for the test to judge)
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def same_layer(store: Store) -> str:
    d = store.scratch_dir("layer-")
    os.makedirs(os.path.join(d, "etc"))
    Path(d, "etc", "same").write_text("same content\n")
    for path in (os.path.join(d, "etc", "same"), os.path.join(d, "etc")):
        os.utime(path, (1700000000, 1700000000))
    return d


def test_the_same_layer_stored_by_many_at_once_is_one_layer(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    for _ in range(20):
        dirs = [same_layer(store) for _ in range(8)]
        results = at_once(8, lambda i, dirs=dirs: store.add_layer(dirs[i], 1700000000))  # type: ignore[misc]
        assert all(isinstance(r, Layer) for r in results), results
        assert len({r.diff_id for r in results if isinstance(r, Layer)}) == 1
    assert len(os.listdir(tmp_path / "store" / "layers")) == 1
    assert os.listdir(tmp_path / "store" / "tmp") == []


def image(n: int) -> ImageConfig:
    return ImageConfig(
        architecture="amd64", os="linux", rootfs=RootFS(diff_ids=[]), config=ContainerConfig(env=[f"N={n}"])
    )


def test_images_and_tags_registered_at_once_are_all_kept(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    ids = at_once(16, lambda i: store.commit(image(i), []))
    assert all(isinstance(i, str) for i in ids), ids
    at_once(16, lambda i: store.tag(str(ids[i]), f"img{i}"))
    assert sorted(Store(str(tmp_path / "store")).image_ids()) == sorted(str(i) for i in ids)
    assert len(store.tags()) == 16


def test_processes_sharing_a_store_lose_no_tag(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    image_id = Store(root).commit(image(0), [])
    script = (
        "import sys\nfrom imagebuild.store.images import Store\ns = Store(sys.argv[1])\n"
        "for i in range(25): s.tag(sys.argv[2], f'p{sys.argv[3]}-{i}')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, root, image_id, str(p)]) for p in range(4)]
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    assert len(Store(root).tags()) == 100
