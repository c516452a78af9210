"""What both formats share: verifying and staging layers, and registering an image once all is checked."""

from __future__ import annotations

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
from imagebuild.store.images import Layer, Store

Opener = Callable[[], BinaryIO]


@dataclass
class Staged:
    diff_id: str
    blob: Descriptor
    compressed: str  # a verified gzip file in the store's tmp dir
    directory: str  # the extracted layer, in the store's tmp dir


class Stager:
    """Verifies and extracts layers into the store's scratch space; `commit` moves them in, `discard` drops all."""

    def __init__(self, store: Store, source: str) -> None:
        self.store = store
        self.source = source
        self.staged: list[Staged] = []
        self._scratch: list[str] = []

    def fail(self, message: str) -> BuildError:
        return BuildError(f"{self.source}: {message}; nothing was imported")

    def stage(self, name: str, opener: Opener, expected_diff_id: str, blob: Descriptor | None) -> None:
        """Stage one layer read from `opener` (gzip, zstd or plain tar); `blob`, when given, is its descriptor."""
        raw = opener().read()
        if blob is not None:
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            if digest != blob.digest or len(raw) != blob.size:
                raise self.fail(f"layer {name} does not match its digest {blob.digest} (corrupt or truncated)")
        plain = _decompress(raw, name, self)
        diff_id = "sha256:" + hashlib.sha256(plain).hexdigest()
        if diff_id != expected_diff_id:
            raise self.fail(f"layer {name} has diff_id {diff_id}, the config says {expected_diff_id}")
        if blob is None or blob.media_type not in mediatypes.GZIP_LAYER_TYPES:
            out = io.BytesIO()
            compress_gzip(io.BytesIO(plain), out)
            raw = out.getvalue()
            blob = Descriptor(
                media_type=mediatypes.OCI_LAYER_GZIP, digest="sha256:" + hashlib.sha256(raw).hexdigest(), size=len(raw)
            )
        compressed = os.path.join(self.store.scratch_dir("import-"), "blob")
        self._scratch.append(os.path.dirname(compressed))
        with open(compressed, "wb") as f:
            f.write(raw)
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

    def commit(self, config_bytes: bytes, tags: list[str]) -> str:
        try:
            config = ImageConfig.from_json(config_bytes)
        except OCIError as exc:
            raise self.fail(f"bad image config: {exc}") from None
        layers = []
        for staged in self.staged:
            with open(staged.compressed, "rb") as f:
                self.store.blobs.put(f, expected_digest=staged.blob.digest)
            target = self.store.layer_dir(staged.diff_id)
            if os.path.isdir(target):
                shutil.rmtree(staged.directory, ignore_errors=True)
            else:
                os.rename(staged.directory, target)
            layers.append(Layer(staged.diff_id, staged.blob))
        image_id = self.store.commit(config, layers)
        for tag in tags:
            self.store.tag(image_id, tag)
        self.discard()
        return image_id

    def discard(self) -> None:
        for path in self._scratch:
            shutil.rmtree(path, ignore_errors=True)
        self._scratch.clear()


def _decompress(raw: bytes, name: str, stager: Stager) -> bytes:
    try:
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        if raw[:4] == b"\x28\xb5\x2f\xfd":
            import zstandard  # type: ignore[import-not-found]

            return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(raw))
    except ImportError:
        raise stager.fail(f"layer {name} is zstd-compressed and the zstandard module is not installed") from None
    except (OSError, EOFError) as exc:
        raise stager.fail(f"layer {name} does not decompress: {exc}") from None
    return raw
