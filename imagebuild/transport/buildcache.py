"""A build cache kept in a registry: written by `--cache-to type=registry`, read by `--cache-from type=registry`.

The format is our own (README: "A build cache shared through a registry"); BuildKit's cacheconfig.v0 was read
and not taken, because its record digests are BuildKit's solver keys (digests of LLB operations the Dockerfile
frontend makes), which another builder cannot compute: a buildx cache would never hit here, nor ours there.

  REF (a tag)       an OCI image index, artifactType `application/vnd.imagebuild.buildcache.v1`, one entry per
                    platform (os/architecture), so machines of several architectures share one REF
  per platform      an OCI image manifest with the same artifactType: config = the cache config below (media type
                    `application/vnd.imagebuild.buildcache.config.v1+json`), layers = the cached layers' blobs
                    (gzip tars, as in our images; annotation `containerd.io/uncompressed` = the diff_id)
  cache config      {"layers": [{"blob": DIGEST, "diffID": DIGEST}], "records": [{"key": "sha256:HEX",
                    "layer": INDEX, "created": RFC3339}]}: each record is one RUN, COPY or ADD step whose cache key
                    (the chain of every step before it, its own text and its sources' content) made that layer

Only this module speaks to the registry for the cache; the builder decides what to write and asks what is there.
"""

from __future__ import annotations

import functools
import io
import json
import platform
from dataclasses import dataclass
from typing import Any

from imagebuild.errors import BuildError
from imagebuild.oci import Descriptor, Index, Manifest, OCIError, Platform, descriptor_for, mediatypes
from imagebuild.store.images import Layer, Store
from imagebuild.transport.common import Stager
from imagebuild.transport.registry import ACCEPT, Client, Reference

ARTIFACT_TYPE = "application/vnd.imagebuild.buildcache.v1"
CONFIG_TYPE = "application/vnd.imagebuild.buildcache.config.v1+json"
DIFF_ID = "containerd.io/uncompressed"
CONFIG_LIMIT = 16 << 20  # a cache config larger than this is not one of ours


@dataclass(frozen=True)
class Record:
    """One cached step: its key, the layer it made and when that layer was made (kept, so image ids match)."""

    key: str
    layer: Layer
    created: str


def this_platform() -> Platform:
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return Platform(architecture=machine, os="linux")


def _same_platform(a: Platform | None, b: Platform) -> bool:
    return a is not None and a.os == b.os and a.architecture == b.architecture and a.variant == b.variant


def _layers(records: list[Record]) -> list[Layer]:
    """The records' layers, each once (several steps may make the same layer), in the order first named."""
    return list({r.layer.blob.digest: r.layer for r in records}.values())


def config_bytes(records: list[Record]) -> bytes:
    layers = _layers(records)
    where = {layer.blob.digest: i for i, layer in enumerate(layers)}
    doc = {
        "layers": [{"blob": layer.blob.digest, "diffID": layer.diff_id} for layer in layers],
        "records": [
            {"key": "sha256:" + r.key, "layer": where[r.layer.blob.digest], "created": r.created} for r in records
        ],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def parse_config(data: bytes, blobs: list[Descriptor], source: str) -> dict[str, Record]:
    """The records of a cache config, by key (hex, without `sha256:`); BuildError naming `source` when malformed."""
    try:
        doc = json.loads(data)
        layers = [Layer(str(entry["diffID"]), _blob(blobs, str(entry["blob"]))) for entry in doc.get("layers", [])]
        records = {}
        for entry in doc.get("records", []):
            key = str(entry["key"]).removeprefix("sha256:")
            records[key] = Record(key, layers[int(entry["layer"])], str(entry["created"]))
        return records
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, OCIError) as exc:
        raise BuildError(f"{source}: not a build cache this builder can read ({exc})") from None


def _blob(blobs: list[Descriptor], digest: str) -> Descriptor:
    for blob in blobs:
        if blob.digest == digest:
            return blob
    raise KeyError(f"layer {digest} is not in the manifest")


def push(store: Store, records: list[Record], ref: Reference, client: Client) -> str:
    """Write `records` and their layers as the cache at `ref` for this platform (other platforms' entries kept);
    returns the digest of the index written."""
    config = config_bytes(records)
    layers = _layers(records)
    for layer in layers:
        client.push_blob(ref.repository, layer.blob.digest, layer.blob.size, store.blobs.open(layer.blob.digest))
    config_descriptor = descriptor_for(CONFIG_TYPE, config)
    client.push_blob(ref.repository, config_descriptor.digest, len(config), io.BytesIO(config))
    blobs = [
        Descriptor(
            media_type=layer.blob.media_type,
            digest=layer.blob.digest,
            size=layer.blob.size,
            annotations={DIFF_ID: layer.diff_id},
        )
        for layer in layers
    ]
    manifest = Manifest(config=config_descriptor, layers=blobs, artifact_type=ARTIFACT_TYPE).to_json()
    manifest_descriptor = descriptor_for(
        mediatypes.OCI_MANIFEST, manifest, artifact_type=ARTIFACT_TYPE, platform=this_platform()
    )
    client.put_manifest(ref.repository, manifest_descriptor.digest, manifest, mediatypes.OCI_MANIFEST)
    others = [m for m in _existing_entries(ref, client) if not _same_platform(m.platform, this_platform())]
    index = Index(manifests=[*others, manifest_descriptor], artifact_type=ARTIFACT_TYPE).to_json()
    client.put_manifest(ref.repository, ref.target, index, mediatypes.OCI_INDEX)
    return descriptor_for(mediatypes.OCI_INDEX, index).digest


def _manifest_at(ref: Reference, client: Client) -> bool:
    """Whether the registry has a manifest at `ref` (a HEAD; 404 is no)."""
    status, _, _ = client.request(
        "HEAD",
        f"/v2/{ref.repository}/manifests/{ref.target}",
        headers={"Accept": ACCEPT},
        scope=f"repository:{ref.repository}:pull",
        ok=(200, 404),
    )
    return status == 200


def _existing_entries(ref: Reference, client: Client) -> list[Descriptor]:
    """The entries of a cache index already at `ref` (none when there is nothing, or something else, there)."""
    if not _manifest_at(ref, client):
        return []
    media_type, data, _ = client.get_manifest(ref.repository, ref.target)
    if media_type != mediatypes.OCI_INDEX:
        return []
    try:
        index = Index.from_json(data)
    except OCIError:
        return []
    return index.manifests if index.artifact_type == ARTIFACT_TYPE else []


class RemoteCache:
    """The records one `--cache-from` REF holds for this platform; a hit's layer is fetched when it is asked for."""

    def __init__(self, ref: Reference, client: Client, records: dict[str, Record]) -> None:
        self.ref = ref
        self.client = client
        self.records = records

    @classmethod
    def open(cls, ref: Reference, client: Client) -> RemoteCache:
        """Read the cache at `ref`; an empty one when the registry has nothing there (a first build)."""
        if not _manifest_at(ref, client):
            return cls(ref, client, {})
        media_type, data, _ = client.get_manifest(ref.repository, ref.target)
        try:
            if media_type != mediatypes.OCI_INDEX or Index.from_json(data).artifact_type != ARTIFACT_TYPE:
                raise BuildError(
                    f"--cache-from {ref}: not a build cache of this builder (a {media_type or 'manifest'} of "
                    f"another kind): name a REF that --cache-to wrote"
                )
            entries = Index.from_json(data).manifests
            entry = next((m for m in entries if _same_platform(m.platform, this_platform())), None)
            if entry is None:
                return cls(ref, client, {})
            _, data, digest = client.get_manifest(ref.repository, entry.digest)
            if digest != entry.digest:
                raise BuildError(f"--cache-from {ref}: manifest {entry.digest} does not match its digest")
            manifest = Manifest.from_json(data)
        except OCIError as exc:
            raise BuildError(f"--cache-from {ref}: malformed cache manifest ({exc})") from None
        if manifest.config.media_type != CONFIG_TYPE or manifest.config.size > CONFIG_LIMIT:
            raise BuildError(f"--cache-from {ref}: the cache manifest's config is not a build cache config")
        config = client.get_blob(ref.repository, manifest.config)
        return cls(ref, client, parse_config(config, manifest.layers, f"--cache-from {ref}"))

    def fetch(self, store: Store, key: str) -> Record | None:
        """The record for `key`, its layer verified and in the store (blob and directory); None when not cached."""
        record = self.records.get(key)
        if record is None:
            return None
        stager = Stager(store, f"--cache-from {self.ref}: layer {record.layer.blob.digest[7:19]}")
        try:
            opener = functools.partial(_download, self.client, self.ref.repository, record.layer.blob)
            stager.stage(record.layer.blob.digest, opener, record.layer.diff_id, record.layer.blob)
            stager.commit_layers()
        finally:
            stager.discard()
        return record


def _download(client: Client, repo: str, blob: Descriptor) -> io.BytesIO:
    return io.BytesIO(client.get_blob(repo, blob))


def record_dict(record: Record) -> dict[str, Any]:
    """A record as the store's local cache entry (what the executor reads on a hit)."""
    return {"diff_id": record.layer.diff_id, "blob": record.layer.blob.to_dict(), "created": record.created}
