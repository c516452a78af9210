"""A pull completes what a lazy mount began: a layer blob assembled from the gzip members the lazy cache holds,
the gaps between them fetched by Range requests, the whole checked against the layer's digest (on a mismatch the
blob is fetched whole)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagebuild.lazy.cache import cached_members
from imagebuild.oci.digest import sha256_digest

if TYPE_CHECKING:
    from imagebuild.oci import Descriptor
    from imagebuild.transport.registry import Client


def _read(path: str, length: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:  # evicted meanwhile
        return None
    return data if len(data) == length else None


def assemble(client: Client, repo: str, layer: Descriptor, cache: str) -> tuple[bytes, int] | None:
    """The blob of `layer` from the members cached at `cache` and Range requests for the rest, and how many of its
    bytes came from the cache; None when the cache holds none of it or the result does not match its digest."""
    pieces = cached_members(cache, layer.digest)
    if not pieces:
        return None
    out = bytearray()
    cached = 0
    for offset, length, path in pieces:
        if offset < len(out) or offset + length > layer.size:
            continue
        if offset > len(out):
            out += client.get_range(repo, layer.digest, len(out), offset - len(out))
        data = _read(path, length)
        if data is None:
            data = client.get_range(repo, layer.digest, offset, length)
        else:
            cached += length
        out += data
    if len(out) < layer.size:
        out += client.get_range(repo, layer.digest, len(out), layer.size - len(out))
    if sha256_digest(out) != layer.digest:
        return None
    return bytes(out), cached
