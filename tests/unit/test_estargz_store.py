"""An image of the store in eStargz form: new diff_ids and config, annotated descriptors, layers stored and
extracted as a pull would, and a second conversion that changes nothing."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from pathlib import Path

import pytest

from imagebuild.errors import BuildError
from imagebuild.layer import estargz as esgz
from imagebuild.oci import Descriptor, ImageConfig, RootFS, mediatypes
from imagebuild.store.estargz import converted, store_converted
from imagebuild.store.images import Store


def plain_image(tmp_path: Path) -> tuple[Store, str]:
    store = Store(str(tmp_path / "store"))
    layers = []
    for name, size in (("base", 100), ("top", 5 << 20)):
        directory = tmp_path / name
        (directory / "data").mkdir(parents=True)
        (directory / "data" / name).write_bytes(os.urandom(size))
        layers.append(store.add_layer(str(directory), None))
    config = ImageConfig(architecture="amd64", os="linux", rootfs=RootFS([layer.diff_id for layer in layers]))
    return store, store.commit(config, layers)


def test_an_image_in_estargz_form_has_its_own_diff_ids_and_annotated_layers(tmp_path: Path) -> None:
    store, plain_id = plain_image(tmp_path)
    plain = store.resolve(plain_id)
    image_id = store_converted(store, plain, ["app:esgz"])
    assert image_id != plain_id and store.resolve("app:esgz").id == image_id
    image = store.resolve(image_id)
    assert image.config.history == plain.config.history and image.config.config == plain.config.config
    for layer, before in zip(image.layers, plain.layers, strict=True):
        blob = store.blobs.read_bytes(layer.blob.digest)
        assert layer.blob.media_type == mediatypes.OCI_LAYER_GZIP
        toc = esgz.verify(io.BytesIO(blob), len(blob), layer.blob.annotations[esgz.TOC_DIGEST_ANNOTATION])
        tar = gzip.decompress(blob)
        assert layer.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest() != before.diff_id
        assert layer.blob.annotations[esgz.UNCOMPRESSED_SIZE_ANNOTATION] == str(len(tar))
        # the layer's directory is its tar's, landmark and TOC included, as any client extracts it
        directory = Path(store.layer_dir(layer.diff_id))
        assert sorted(os.listdir(directory)) == [esgz.NO_PREFETCH_LANDMARK, "data", esgz.TOC_NAME]
        assert os.listdir(directory / "data") == os.listdir(store.layer_dir(before.diff_id) + "/data")
        assert len(toc.entries) >= 3
    assert (
        len(
            esgz.read_toc(
                io.BytesIO(store.blobs.read_bytes(image.layers[1].blob.digest)), image.layers[1].blob.size
            ).chunks("data/top")
        )
        == 2
    )
    # every blob, image and layer directory checks (rootfs leftovers of other processes on the machine aside)
    assert [p for p in store.check(repair=False) if not p.startswith("the rootfs")] == []


def test_converting_twice_gives_the_same_image_and_an_estargz_image_is_kept(tmp_path: Path) -> None:
    store, plain_id = plain_image(tmp_path)
    with converted(store, store.resolve(plain_id)) as first:
        digests = first.manifest_bytes
    image_id = store_converted(store, store.resolve(plain_id), [])
    assert store.blobs.read_bytes(store.manifest_digest(image_id)) == digests
    with converted(store, store.resolve(image_id)) as again:
        assert not again.changed and again.manifest_bytes == digests and again.files == {}


def test_a_layer_whose_blob_does_not_give_its_diff_id_is_refused(tmp_path: Path) -> None:
    store, plain_id = plain_image(tmp_path)
    image = store.resolve(plain_id)
    wrong = store.blobs.put_bytes(gzip.compress(b"\0" * 1024, mtime=0))
    bad = Descriptor(mediatypes.OCI_LAYER_GZIP, wrong.digest, wrong.size)
    image.manifest.layers[0] = bad
    with (
        pytest.raises(BuildError, match=r"layer 1 .*cannot be written as eStargz: its tar has diff_id"),
        converted(store, image),
    ):
        pass
    assert os.listdir(os.path.join(store.root, "tmp")) == []
