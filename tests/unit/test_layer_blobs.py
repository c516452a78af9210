"""The blobs of layers a build makes: not made at capture, made the same (bytes, digest) whenever and however they
are, in the background or when an image needs them; a blob gone since is made again; a changed directory is
refused in one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagebuild.errors import BuildError
from imagebuild.layer import write_layer_tar
from imagebuild.layer.gzipped import compress_gzip
from imagebuild.store.images import Layer, Store
from imagebuild.store.layerblobs import LocalLayer

EPOCH = 1700000000


def layer_dir(store: Store, content: bytes) -> str:
    d = store.scratch_dir("layer-")
    os.makedirs(os.path.join(d, "usr", "lib"))
    Path(d, "usr", "lib", "data").write_bytes(content)
    Path(d, "usr", "lib", "text").write_text("text\n" * 1000)
    return d


def content() -> bytes:
    return bytes(range(256)) * 20_000 + os.urandom(3 << 20)  # several gzip blocks, some of them compressible


def gzipped_tar(directory: str, tmp_path: Path) -> tuple[str, int]:
    """The blob as a layer was stored before its compression moved off the build: tar, then gzip, in one go."""
    with open(tmp_path / "raw.tar", "w+b") as raw, open(tmp_path / "blob.gz", "wb") as out:
        write_layer_tar(directory, raw, mtime_clamp=EPOCH, host_owner=None if os.geteuid() == 0 else (0, 0))
        raw.seek(0)
        return compress_gzip(raw, out)


def test_a_captured_layer_has_no_blob_until_an_image_needs_it(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    layer = store.capture_layer(layer_dir(store, content()), EPOCH)
    assert isinstance(layer, LocalLayer)
    assert os.path.isdir(store.layer_dir(layer.diff_id))
    assert list(store.blobs.iter_digests()) == []  # nothing compressed at capture
    made = store.concrete(layer)
    assert list(store.blobs.iter_digests()) == [made.blob.digest]
    assert store.layer_blobs.recorded(layer.diff_id) == made.blob
    assert store.concrete(layer) == made  # recorded: not made twice
    assert os.listdir(tmp_path / "store" / "tmp") == []


def test_background_on_demand_and_remade_blobs_are_the_bytes_of_tar_then_gzip(tmp_path: Path) -> None:
    data = content()
    one, two = Store(str(tmp_path / "one")), Store(str(tmp_path / "two"))
    background = one.capture_layer(layer_dir(one, data), EPOCH, background=True)
    on_demand = two.capture_layer(layer_dir(two, data), EPOCH)
    assert background == on_demand
    expected = gzipped_tar(one.layer_dir(background.diff_id), tmp_path)
    made = one.concrete(background)  # waits for the background thread's
    assert (made.blob.digest, made.blob.size) == expected
    assert two.concrete(on_demand).blob == made.blob
    os.chmod(one.blobs.path(made.blob.digest), 0o644)
    os.unlink(one.blobs.path(made.blob.digest))  # gone (pruned, say): the record counts for nothing
    assert one.layer_blobs.recorded(background.diff_id) is None
    assert one.concrete(background).blob == made.blob
    assert one.blobs.verify(made.blob.digest).digest == expected[0]


def test_closing_drops_background_work_and_the_blob_is_still_made_on_demand(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    layers = [store.capture_layer(layer_dir(store, content()), EPOCH, background=True) for _ in range(3)]
    store.layer_blobs.close()
    assert all(isinstance(store.concrete(layer), Layer) for layer in layers)
    assert len(list(store.blobs.iter_digests())) == 3
    assert os.listdir(tmp_path / "store" / "tmp") == []


def test_a_layer_directory_changed_since_capture_is_refused_in_one_line(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    layer = store.capture_layer(layer_dir(store, b"before"), EPOCH)
    target = Path(store.layer_dir(layer.diff_id), "usr", "lib", "data")
    target.write_bytes(b"after!")
    os.utime(target, (EPOCH, EPOCH))
    with pytest.raises(BuildError) as raised:
        store.concrete(layer)
    assert "has changed" in str(raised.value) and "\n" not in str(raised.value)
    assert list(store.blobs.iter_digests()) == []
    assert os.listdir(tmp_path / "store" / "tmp") == []


def test_prune_forgets_the_records_of_pruned_layers(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    layer = store.capture_layer(layer_dir(store, b"x"), EPOCH)
    store.concrete(layer)
    store.prune()  # no image holds it
    assert os.listdir(tmp_path / "store" / "layerblobs") == []
    assert list(store.blobs.iter_digests()) == []
