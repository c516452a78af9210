"""An image of the store in eStargz form (`push --estargz`, `build --estargz`): each layer rewritten as eStargz
(imagebuild.layer.estargz), a config naming the new diff_ids, a manifest whose layer descriptors carry the TOC
digest and uncompressed size annotations.

The layer tars' entries are kept byte for byte; the landmark and TOC entries eStargz adds change each layer's
diff_id, so the eStargz image has its own config and image id. A layer that is eStargz already (pulled, or
converted before) is kept as it is, annotated if its descriptor lacked the annotations. Everything is
deterministic: converting one image twice gives the same blobs, config and manifest.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import IO, BinaryIO, cast

from imagebuild.errors import BuildError
from imagebuild.layer import LayerError
from imagebuild.layer import estargz as esgz
from imagebuild.layer._fs import CHUNK, ZSTD
from imagebuild.oci import Descriptor, ImageConfig, Manifest, descriptor_for, mediatypes
from imagebuild.store.blobs import BlobError
from imagebuild.store.images import Image, Store
from imagebuild.transport.common import Stager


@dataclass
class Converted:
    """An image in eStargz form, not yet in the store: its new blobs are files in `scratch`."""

    manifest_bytes: bytes
    config_bytes: bytes
    manifest: Manifest
    diff_ids: list[str]
    files: dict[str, str] = field(default_factory=dict)  # blob digest -> file, for blobs the store lacks
    changed: bool = True  # False: the image was eStargz already, with its annotations

    def open_blob(self, store: Store, digest: str) -> BinaryIO:
        path = self.files.get(digest)
        return open(path, "rb") if path is not None else store.blobs.open(digest)


def _plain_stream(src: BinaryIO, stack: contextlib.ExitStack) -> IO[bytes]:
    """`src` (a stream that can `peek`) as an uncompressed tar: gzip and zstd are known by their magic."""
    head = cast(io.BufferedReader, src).peek(4)[:4]
    if head[:2] == b"\x1f\x8b":
        return cast(IO[bytes], stack.enter_context(gzip.GzipFile(fileobj=src, mode="rb")))
    if head == b"\x28\xb5\x2f\xfd":
        if ZSTD is None:
            raise LayerError("zstd-compressed layer, but the 'zstandard' module is not installed")
        return stack.enter_context(ZSTD.ZstdDecompressor().stream_reader(src, read_across_frames=True))
    return src


def _is_estargz(store: Store, blob: Descriptor) -> esgz.Toc | None:
    if mediatypes.layer_compression(blob.media_type) != "gzip":
        return None
    with store.blobs.open(blob.digest, verify=False) as f:
        try:
            toc = esgz.read_toc(f, blob.size)
        except LayerError:
            return None
    wanted = blob.annotations.get(esgz.TOC_DIGEST_ANNOTATION)
    return toc if wanted in (None, toc.digest) else None


def _uncompressed_size(store: Store, digest: str) -> int:
    size = 0
    with store.blobs.open(digest) as src, gzip.GzipFile(fileobj=src, mode="rb") as plain:
        while data := plain.read(CHUNK):
            size += len(data)
    return size


def convert(store: Store, image: Image, scratch: str, *, chunk_size: int = esgz.CHUNK_SIZE) -> Converted:
    """`image` in eStargz form; new blobs are written under `scratch` (the caller removes it)."""
    docker = image.manifest.media_type == mediatypes.DOCKER_MANIFEST
    layers: list[Descriptor] = []
    diff_ids: list[str] = []
    files: dict[str, str] = {}
    changed = False
    for number, layer in enumerate(image.layers):
        where = f"layer {number + 1} ({layer.blob.digest[7:19]})"
        try:
            toc = _is_estargz(store, layer.blob)
            if toc is not None:
                annotations = dict(layer.blob.annotations)
                annotations.setdefault(esgz.TOC_DIGEST_ANNOTATION, toc.digest)
                if esgz.UNCOMPRESSED_SIZE_ANNOTATION not in annotations:
                    annotations[esgz.UNCOMPRESSED_SIZE_ANNOTATION] = str(_uncompressed_size(store, layer.blob.digest))
                changed |= annotations != layer.blob.annotations
                layers.append(replace(layer.blob, annotations=annotations))
                diff_ids.append(layer.diff_id)
                continue
            written, path = _convert_layer(store, layer.blob.digest, layer.diff_id, scratch, chunk_size)
        except (LayerError, BlobError, OSError, EOFError) as exc:
            raise BuildError(f"{where}: cannot be written as eStargz: {exc}") from None
        files[written.digest] = path
        media_type = mediatypes.layer_media_type("gzip", docker=docker)
        annotations = {k: v for k, v in layer.blob.annotations.items() if k not in written.annotations()}
        annotations.update(written.annotations())
        layers.append(Descriptor(media_type, written.digest, written.size, annotations=annotations))
        diff_ids.append(written.diff_id)
        changed = True
    config = ImageConfig.from_json(store.blobs.read_bytes(image.manifest.config.digest))
    if diff_ids == config.rootfs.diff_ids:
        config_bytes = store.blobs.read_bytes(image.manifest.config.digest)
        config_descriptor = image.manifest.config
    else:
        config.rootfs = replace(config.rootfs, diff_ids=diff_ids)
        config_bytes = config.to_json()
        config_descriptor = descriptor_for(image.manifest.config.media_type, config_bytes)
        path = os.path.join(scratch, "config.json")
        with open(path, "wb") as f:
            f.write(config_bytes)
        files[config_descriptor.digest] = path
    if not changed:
        manifest_bytes = store.blobs.read_bytes(store.manifest_digest(image.id))
        return Converted(manifest_bytes, config_bytes, image.manifest, diff_ids, files, changed=False)
    manifest = replace(image.manifest, config=config_descriptor, layers=layers)
    return Converted(manifest.to_json(), config_bytes, manifest, diff_ids, files)


def _convert_layer(store: Store, digest: str, diff_id: str, scratch: str, chunk_size: int) -> tuple[esgz.Written, str]:
    """One stored layer blob as an eStargz file under `scratch`; its plain tar is checked against `diff_id`."""
    tar_path = os.path.join(scratch, "layer.tar")
    with contextlib.ExitStack() as stack, open(tar_path, "w+b") as tar:
        src = stack.enter_context(store.blobs.open(digest))  # a BufferedReader: it can peek
        plain = _plain_stream(src, stack)
        hasher = hashlib.sha256()
        while data := plain.read(CHUNK):
            hasher.update(data)
            tar.write(data)
        if "sha256:" + hasher.hexdigest() != diff_id:
            raise LayerError(f"its tar has diff_id sha256:{hasher.hexdigest()}, the config says {diff_id}")
        tar.seek(0)
        out_path = os.path.join(scratch, "estargz.tmp")
        with open(out_path, "wb") as out:
            written = esgz.write_estargz(tar, out, chunk_size=chunk_size)
    os.unlink(tar_path)
    final = os.path.join(scratch, written.digest.removeprefix("sha256:"))
    os.replace(out_path, final)
    return written, final


@contextlib.contextmanager
def converted(store: Store, image: Image) -> Iterator[Converted]:
    """`convert` in a scratch directory of the store that is removed afterwards, whatever happens."""
    scratch = store.scratch_dir("estargz-")
    try:
        yield convert(store, image, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def store_converted(store: Store, image: Image, tags: list[str]) -> str:
    """Convert `image` and register the eStargz image in the store (its layers extracted as every pulled layer
    is, through the same Stager), tagged with `tags`; returns its image id."""
    with converted(store, image) as result:
        if not result.changed:
            for tag in tags:
                store.tag(image.id, tag)
            return image.id
        stager = Stager(store, "eStargz conversion")
        try:
            for blob, diff_id in zip(result.manifest.layers, result.diff_ids, strict=True):
                stager.stage(blob.digest, functools.partial(result.open_blob, store, blob.digest), diff_id, blob)
            return stager.commit(result.config_bytes, tags, result.manifest_bytes)
        finally:
            stager.discard()
