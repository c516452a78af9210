"""An image in a registry as a lazy mount needs it: manifest, config, and each eStargz layer's verified TOC, read
with HTTP Range requests (the footer, then the TOC's gzip member); nothing else of the layers is fetched."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

from imagebuild.errors import BuildError
from imagebuild.layer import estargz as esgz
from imagebuild.layer.errors import LayerError
from imagebuild.oci import Descriptor, ImageConfig, OCIError
from imagebuild.store.images import Image
from imagebuild.transport.registry import Client, Reference, image_manifest


@dataclass(frozen=True)
class RemoteLayer:
    blob: Descriptor
    diff_id: str
    toc: esgz.Toc | None  # None: not eStargz (or without a TOC digest to check it by): pulled whole


@dataclass(frozen=True)
class RemoteImage:
    ref: Reference
    image: Image
    manifest_bytes: bytes
    config_bytes: bytes
    layers: list[RemoteLayer]  # bottom first, as the manifest lists them


class _Tail(io.BytesIO):
    """The bytes of a blob from `start` on, read as the whole blob (read_toc seeks by blob offsets)."""

    def __init__(self, start: int, data: bytes) -> None:
        super().__init__(data)
        self.start = start

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return super().seek(offset - self.start if whence == io.SEEK_SET else offset, whence) + self.start


def remote_toc(client: Client, repo: str, blob: Descriptor) -> esgz.Toc | None:
    """The TOC of an eStargz layer, checked against its annotation; None for a layer without the annotation."""
    want = blob.annotations.get(esgz.TOC_DIGEST_ANNOTATION) if blob.annotations else None
    if not want or blob.size < esgz.FOOTER_SIZE:
        return None
    footer = client.get_range(repo, blob.digest, blob.size - esgz.FOOTER_SIZE, esgz.FOOTER_SIZE)
    try:
        offset = esgz.parse_footer(footer)
        if not 0 <= offset < blob.size - esgz.FOOTER_SIZE:
            raise LayerError(f"the footer names a TOC offset ({offset}) outside the blob")
        tail = client.get_range(repo, blob.digest, offset, blob.size - offset)
        toc = esgz.read_toc(_Tail(offset, tail), blob.size)
    except LayerError as exc:
        raise BuildError(f"layer {blob.digest}: {exc}") from None
    if toc.digest != want:
        raise BuildError(f"layer {blob.digest}: its TOC's digest is {toc.digest}, its annotation says {want}")
    return toc


def resolve(client: Client, ref: Reference) -> RemoteImage:
    """Read what a lazy mount of `ref` needs from the registry."""

    def fail(message: str) -> BuildError:
        return BuildError(f"{ref}: {message}")

    manifest_bytes, manifest, _ = image_manifest(client, ref, fail)
    config_bytes = client.get_blob(ref.repository, manifest.config)
    try:
        config = ImageConfig.from_json(config_bytes)
    except OCIError as exc:
        raise fail(f"malformed image config: {exc}") from None
    diff_ids = json.loads(config_bytes).get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(manifest.layers):
        raise fail("the manifest and the config disagree on the number of layers")
    layers = [
        RemoteLayer(blob, diff_id, remote_toc(client, ref.repository, blob))
        for blob, diff_id in zip(manifest.layers, diff_ids, strict=True)
    ]
    image = Image(manifest.config.digest, manifest, config)
    return RemoteImage(ref, image, manifest_bytes, config_bytes, layers)
