"""The compressed blobs of the layers a build makes: made when an image needs them, or in the background.

A build captures a layer as its directory and diff_id only (`LocalLayer`): the tar is written once to hash it,
and nothing is compressed. The blob (the same tar, gzipped deterministically by imagebuild/layer/gzipped.py, so
the same bytes and digest whatever made it and whenever) is made from the directory when an image that holds the
layer is committed, pushed or exported, or ahead of that, by one background thread, for the layers of the stage an
image will be made of, while the next steps run. The layers of a multi-stage build's earlier stages that no
image holds are never compressed.

Once stored, a blob is named in `layerblobs/<diff hex>.json` (its descriptor, written after the blob, atomically),
which later builds read on a cache hit. A build killed before a blob was made leaves a cache entry that names only
the diff_id and the directory, and the blob is made the next time an image needs it; a record whose blob has gone
(pruned) counts as no record.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, cast

from imagebuild.errors import BuildError, ImagebuildError
from imagebuild.layer import write_layer_tar
from imagebuild.layer._fs import CHUNK
from imagebuild.layer.gzipped import GzipWriter
from imagebuild.oci import Descriptor, OCIError, mediatypes
from imagebuild.store.blobs import BlobStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from _typeshed import ReadableBuffer


@dataclass(frozen=True)
class LocalLayer:
    """A layer this store made (its directory is stored) whose blob may not be made yet."""

    diff_id: str
    mtime_clamp: int | None  # SOURCE_DATE_EPOCH of the build that made it: its tar is written with it again


#: a temporary record older than this is a killed build's leftover
STALE_TEMP_SECONDS = 3600


class LayerBlobs:
    """Makes, finds and records the blobs of local layers; one background thread compresses ahead."""

    def __init__(
        self, root: str, blobs: BlobStore, layer_dir: Callable[[str], str], host_owner: tuple[int, int] | None
    ) -> None:
        self._dir = os.path.join(root, "layerblobs")
        self._tmp = os.path.join(root, "tmp")
        os.makedirs(self._dir, exist_ok=True)
        self._blobs = blobs
        self._layer_dir = layer_dir
        self._host_owner = host_owner
        self._lock = threading.Lock()
        self._making: dict[str, concurrent.futures.Future[Descriptor]] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._stop = threading.Event()

    def _record_path(self, diff_id: str) -> str:
        return os.path.join(self._dir, diff_id.removeprefix("sha256:") + ".json")

    def recorded(self, diff_id: str) -> Descriptor | None:
        """The stored blob of the layer `diff_id`, when one was made and is still there."""
        try:
            with open(self._record_path(diff_id), encoding="utf-8") as f:
                blob = Descriptor.from_dict(json.load(f))
        except (OSError, ValueError, OCIError):
            return None
        return blob if self._blobs.has(blob.digest) else None

    def background(self, layer: LocalLayer) -> None:
        """Start making the layer's blob in the background thread, unless it is made or being made."""
        with self._lock:
            if layer.diff_id in self._making or self.recorded(layer.diff_id) is not None:
                return
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="layerblob")
            self._making[layer.diff_id] = self._pool.submit(self._make, layer, self._stop)

    def blob(self, layer: LocalLayer) -> Descriptor:
        """The layer's blob: recorded, else the background's (waited for), else made now."""
        while True:
            try:
                return self._blob(layer)
            except (concurrent.futures.CancelledError, _Stopped):
                continue  # a background job given up on (the store closing): made here instead

    def _blob(self, layer: LocalLayer) -> Descriptor:
        with self._lock:
            future = self._making.get(layer.diff_id)
            if future is None:
                found = self.recorded(layer.diff_id)
                if found is not None:
                    return found
                future = concurrent.futures.Future()
                self._making[layer.diff_id] = future
                mine = True
            else:
                mine = False
        if mine:
            try:
                future.set_result(self._make(layer, None))
            except BaseException as exc:  # noqa: BLE001 (handed to whoever waits for it, raised there)
                future.set_exception(exc)
        try:
            return future.result()
        finally:
            with self._lock:
                if self._making.get(layer.diff_id) is future:
                    del self._making[layer.diff_id]

    def close(self) -> None:
        """Stop the background thread: what it was making and what is queued is dropped (made when an image
        needs it), its temporary file removed."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._stop.set()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:  # what was given up on is not being made: a later background() starts it again
            for diff_id, future in list(self._making.items()):
                if future.cancelled() or (future.done() and isinstance(future.exception(), _Stopped)):
                    del self._making[diff_id]
        self._stop.clear()

    def _make(self, layer: LocalLayer, stop: threading.Event | None) -> Descriptor:
        directory = self._layer_dir(layer.diff_id)
        if not os.path.isdir(directory):
            raise BuildError(f"layer {layer.diff_id}: its directory {directory} is gone: rebuild without the cache")
        fd, path = tempfile.mkstemp(dir=self._tmp, prefix="gz-")
        try:
            with os.fdopen(fd, "w+b") as gz:
                with GzipWriter(cast(BinaryIO, gz)) as compressed:
                    diff_id = tar_digest(
                        directory, layer.mtime_clamp, self._host_owner, cast(BinaryIO, compressed), stop
                    )
                if diff_id != layer.diff_id:
                    raise BuildError(
                        f"layer {layer.diff_id}: its directory {directory} has changed (its tar is now {diff_id}): "
                        "run 'imagebuild check', and rebuild without the cache"
                    )
                gz.seek(0)
                info = self._blobs.put(gz)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        blob = Descriptor(media_type=mediatypes.OCI_LAYER_GZIP, digest=info.digest, size=info.size)
        record = json.dumps(blob.to_dict(), sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(record)
        os.replace(tmp, self._record_path(layer.diff_id))
        return blob

    def forget_missing(self, keep: Callable[[str], bool]) -> None:
        """Remove the records of layers `keep` refuses (by diff_id) and those whose blob is gone (prune)."""
        for name in os.listdir(self._dir):
            path = os.path.join(self._dir, name)
            if not name.endswith(".json"):
                # a record a running build is writing, or one a killed build left (an hour old: no build's now)
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - os.lstat(path).st_mtime > STALE_TEMP_SECONDS:
                        os.unlink(path)
                continue
            diff_id = "sha256:" + name.removesuffix(".json")
            if not keep(diff_id) or self.recorded(diff_id) is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


class _Stopped(ImagebuildError):
    """The store is closing: a background blob is abandoned (made again when an image needs it)."""


def tar_digest(
    directory: str,
    mtime_clamp: int | None,
    host_owner: tuple[int, int] | None,
    sink: BinaryIO,
    stop: threading.Event | None = None,
) -> str:
    """Write the layer tar of `directory` to `sink`: its sha256 (the diff_id)."""
    hasher = _Sha256Writer(sink, stop)
    with io.BufferedWriter(hasher, CHUNK) as buffered:
        write_layer_tar(directory, cast(BinaryIO, buffered), mtime_clamp=mtime_clamp, host_owner=host_owner)
    return hasher.digest()


class _Sha256Writer(io.RawIOBase):
    """A write-only stream that hashes what passes on to `sink`; once `stop` is set, it refuses to go on."""

    def __init__(self, sink: BinaryIO, stop: threading.Event | None) -> None:
        super().__init__()
        self._sink = sink
        self._stop = stop
        self._hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        if self._stop is not None and self._stop.is_set():
            raise _Stopped
        self._hash.update(data)
        return int(self._sink.write(data))

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class NullSink(io.RawIOBase):
    """Where a tar goes when only its digest is wanted."""

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        return len(memoryview(data))
