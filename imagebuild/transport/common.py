"""What both formats share: verifying and staging layers, and registering an image once all is checked."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from imagebuild.errors import BuildError
from imagebuild.layer import LayerError, compress_gzip, extract_layer_tar
from imagebuild.oci import Descriptor, ImageConfig, OCIError, mediatypes
from imagebuild.store.images import Layer, Store, make_manifest

Opener = Callable[[], BinaryIO]
Say = Callable[[str], None]


def quiet(text: str) -> None:
    pass


@dataclass
class Staged:
    diff_id: str
    blob: Descriptor
    compressed: str | None  # a verified blob file in the store's tmp dir; None when the store has the blob
    directory: str | None  # the extracted layer in the store's tmp dir; None when the store has the layer dir


class Stager:
    """Verifies and extracts layers into the store's scratch space; `commit` moves them in, `discard` drops all.

    A layer the store already holds is not read again: when the store has the blob the manifest names (paired
    with the same diff_id by an image it holds) and the layer's directory, nothing is fetched or extracted. When
    it has only the directory (a layer a build made, compressed by us to other bytes), the blob the manifest
    names must still be fetched, as the store cannot make those exact bytes and a push or export must send
    them; it is checked against the diff_id but not extracted. When it has only the blob, that is read
    locally and extracted."""

    def __init__(self, store: Store, source: str, say: Say = quiet) -> None:
        self.store = store
        self.source = source
        self.say = say
        self.staged: list[Staged] = []
        self._scratch: list[str] = []
        self._pairs: dict[str, str] | None = None

    def fail(self, message: str) -> BuildError:
        return BuildError(f"{self.source}: {message}; nothing was imported")

    def _paired(self, blob: Descriptor, diff_id: str) -> bool:
        if self._pairs is None:
            self._pairs = self.store.layer_pairs()
        return self._pairs.get(blob.digest) == diff_id

    def stage(self, name: str, opener: Opener, expected_diff_id: str, blob: Descriptor | None) -> None:
        """Stage one layer read from `opener` (gzip, zstd or plain tar); `blob`, when given, is its descriptor,
        and the blob is kept as it is. Without one (a docker-archive's plain tar) the layer is gzipped
        deterministically (`compress_gzip`: fixed level, mtime 0, no name)."""
        has_dir = os.path.isdir(self.store.layer_dir(expected_diff_id))
        if blob is not None and self.store.blobs.has(blob.digest):
            if has_dir and self._paired(blob, expected_diff_id):
                self.say(f"layer {blob.digest} already present")
                self.staged.append(Staged(expected_diff_id, blob, None, None))
                return
            self.say(
                f"layer {blob.digest}: its blob is already present, " + ("checking it" if has_dir else "extracting it")
            )
            opener = functools.partial(self.store.blobs.open, blob.digest)
        elif blob is not None and has_dir:
            self.say(f"layer {blob.digest}: its content is already present, fetching the blob the manifest names")
        raw = opener().read()
        if blob is not None:
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            if digest != blob.digest or len(raw) != blob.size:
                raise self.fail(f"layer {name} does not match its digest {blob.digest} (corrupt or truncated)")
        plain = decompress_layer(raw, name, self.fail)
        diff_id = "sha256:" + hashlib.sha256(plain).hexdigest()
        if diff_id != expected_diff_id:
            raise self.fail(f"layer {name} has diff_id {diff_id}, the config says {expected_diff_id}")
        if blob is None:
            out = io.BytesIO()
            compress_gzip(io.BytesIO(plain), out)
            raw = out.getvalue()
            blob = Descriptor(
                media_type=mediatypes.OCI_LAYER_GZIP, digest="sha256:" + hashlib.sha256(raw).hexdigest(), size=len(raw)
            )
            if has_dir and self.store.blobs.has(blob.digest):
                self.say(f"layer {blob.digest} already present")
                self.staged.append(Staged(diff_id, blob, None, None))
                return
        compressed = None
        if not self.store.blobs.has(blob.digest):
            compressed = os.path.join(self.store.scratch_dir("import-"), "blob")
            self._scratch.append(os.path.dirname(compressed))
            with open(compressed, "wb") as f:
                f.write(raw)
        directory = None
        if not has_dir:
            directory = self.store.scratch_dir("layer-")
            os.rmdir(directory)
            self._scratch.append(directory)
            try:
                extract_layer_tar(
                    io.BytesIO(plain),
                    directory,
                    whiteout_form="chardev" if os.geteuid() == 0 else "file",
                    rootless=os.geteuid() != 0,
                )
            except LayerError as exc:
                raise self.fail(f"layer {name}: {exc}") from None
        self.staged.append(Staged(diff_id, blob, compressed, directory))

    def commit(
        self,
        config_bytes: bytes,
        tags: list[str],
        manifest_bytes: bytes | None = None,
        index_bytes: bytes | None = None,
    ) -> str:
        """Move the staged layers in and register the image: with `manifest_bytes` (and `index_bytes`) exactly as
        received; without, with the manifest we make for it (`make_manifest`)."""
        try:
            ImageConfig.from_json(config_bytes)
        except OCIError as exc:
            raise self.fail(f"bad image config: {exc}") from None
        layers = self.commit_layers()
        if manifest_bytes is None:
            manifest_bytes = make_manifest(config_bytes, layers)
        image_id = self.store.register(manifest_bytes, config_bytes, index_bytes)
        for tag in tags:
            self.store.tag(image_id, tag)
        self.discard()
        return image_id

    def commit_layers(self) -> list[Layer]:
        """Move the staged layers' blobs and directories into the store (no image named); the layers, in order."""
        layers = []
        for staged in self.staged:
            if staged.compressed is not None:
                with open(staged.compressed, "rb") as f:
                    self.store.blobs.put(f, expected_digest=staged.blob.digest)
            if staged.directory is not None:
                self.store.keep_layer_dir(staged.directory, staged.diff_id)
            layers.append(Layer(staged.diff_id, staged.blob))
        self.staged.clear()
        return layers

    def discard(self) -> None:
        for path in self._scratch:
            shutil.rmtree(path, ignore_errors=True)
        self._scratch.clear()


def decompress_layer(raw: bytes, name: str, fail: Callable[[str], BuildError] = BuildError) -> bytes:
    """A layer blob's tar: gzip and zstd are recognised by their magic numbers, anything else is a plain tar."""
    try:
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        if raw[:4] == b"\x28\xb5\x2f\xfd":
            import zstandard  # type: ignore[import-not-found]

            return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(raw))
    except ImportError:
        raise fail(f"layer {name} is zstd-compressed and the zstandard module is not installed") from None
    except (OSError, EOFError) as exc:
        raise fail(f"layer {name} does not decompress: {exc}") from None
    return raw
