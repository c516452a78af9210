"""The Fetcher a lazy mount's daemon loads (`-o fetcher=imagebuild.lazy.fetcher.from_spec,fetchspec=SPEC`).

`open(key)` gives a file's data: from the cache, or fetched chunk by chunk with HTTP Range requests (each
chunk's gzip member alone), every chunk checked against its TOC `chunkDigest` and the whole file against its
`digest` before the file gets its name in the cache, so no byte is served unverified. Files a TOC puts before its
`.prefetch.landmark` are fetched in a thread from the start. A dropped connection or a
5xx is retried by the registry client (a few times, with a short backoff). A file that cannot be had (a chunk
that does not match, a registry that stays away) is EIO for that file alone, with one line in the spec's log.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from imagebuild.errors import ImagebuildError
from imagebuild.layer import estargz as esgz
from imagebuild.layer._fs import write_all
from imagebuild.lazy.cache import FileCache, member_key
from imagebuild.oci.digest import sha256_digest
from imagebuild.transport.registry import Client

SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass
class _Layer:
    entries: dict[str, dict[str, Any]]  # regular files by name (no leading ./ or /)
    toc: esgz.Toc
    ends: list[int]  # every gzip member's offset and the TOC's, sorted: where a member ends


def _name(text: str) -> str:
    return text.strip("/").removeprefix("./")


class RegistryFetcher:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.client = Client(spec["registry"], insecure=bool(spec["insecure"]))
        self.repository = str(spec["repository"])
        self.cache = FileCache(spec["cache"], int(spec["cache_limit"]))
        self.tocs = str(spec["tocs"])
        self.log = str(spec["log"])
        self.layers: dict[str, dict[str, Any]] = dict(spec["layers"])
        self._loaded: dict[str, _Layer] = {}
        # The daemon fetches in worker threads, the prefetch in one of its own: one fetch of a file at a time (the
        # others wait for it and take it from the cache), while other files are fetched or read meanwhile.
        self._lock = threading.Lock()  # guards _loaded and _fetching
        self._fetching: dict[str, threading.Lock] = {}

    def open(self, key: bytes) -> int:
        layer, _, raw_name = key.partition(b"\0")
        digest, name = layer.decode(errors="replace"), os.fsdecode(raw_name)
        try:
            return self._open(digest, name)
        except (ImagebuildError, OSError, ValueError, KeyError) as exc:
            self._say(f"/{_name(name)} (layer {digest}): {exc}: answered EIO")
            raise OSError(errno.EIO, os.strerror(errno.EIO)) from None

    def prefetch(self) -> threading.Thread | None:
        """Fetch into the cache, in a thread of its own, the files each layer's TOC puts before its
        `.prefetch.landmark` (those its maker expects to be read first); None when no layer has one."""
        keys: list[tuple[str, str]] = []
        for digest in self.layers:
            try:
                layer = self._layer(digest)
            except (OSError, ValueError, KeyError) as exc:
                self._say(f"layer {digest}: no prefetch: {exc}")
                continue
            end = layer.toc.prefetch_end()
            if end is not None:
                keys += [(digest, n) for n, e in layer.entries.items() if e.get("size") and int(e["offset"]) < end]
        if not keys:
            return None
        thread = threading.Thread(target=self._prefetch, args=(keys,), name="prefetch", daemon=True)
        thread.start()
        return thread

    def _prefetch(self, keys: list[tuple[str, str]]) -> None:
        for digest, name in keys:
            with contextlib.suppress(OSError):  # (logged by open; the file is tried again when it is opened)
                os.close(self.open(digest.encode() + b"\0" + os.fsencode(name)))

    def _say(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"{stamp} imagebuild lazy: {text}\n".encode(errors="replace"))
        finally:
            os.close(fd)

    def _layer(self, digest: str) -> _Layer:
        with self._lock:
            return self._load(digest)

    def _load(self, digest: str) -> _Layer:
        found = self._loaded.get(digest)
        if found is not None:
            return found
        info = self.layers[digest]
        with open(os.path.join(self.tocs, digest.removeprefix("sha256:") + ".json"), "rb") as f:
            raw = f.read()
        if sha256_digest(raw) != info["toc_digest"]:
            raise ValueError(f"the stored TOC of layer {digest} does not match its digest: run 'imagebuild check'")
        entries = json.loads(raw)["entries"]
        toc = esgz.Toc(int(info["toc_offset"]), info["toc_digest"], entries, raw)
        files = {_name(str(e["name"])): e for e in entries if e.get("type") == "reg"}
        ends = sorted({int(e["offset"]) for e in entries if "offset" in e} | {toc.offset})
        found = self._loaded[digest] = _Layer(files, toc, ends)
        return found

    def _open(self, digest: str, name: str) -> int:
        layer = self._layer(digest)
        entry = layer.entries[_name(name)]
        want = str(entry.get("digest") or "")
        if not SHA256.fullmatch(want):  # (it names a file in the cache: never a path; and it checks the data)
            raise ValueError(f"the TOC gives the file the digest {want[:80]!r}, not a sha256 digest")
        cache_key = want
        fd = self.cache.open(cache_key)
        if fd is not None:
            return fd
        with self._lock:
            busy = self._fetching.setdefault(cache_key, threading.Lock())
        with busy:
            fd = self.cache.open(cache_key)  # (fetched by another thread while this one waited)
            if fd is not None:
                return fd
            try:
                return self._fetch(layer, digest, entry, want, cache_key)
            finally:  # (a later open finds the file cached, or fetches it anew)
                with self._lock:
                    self._fetching.pop(cache_key, None)

    def _fetch(self, layer: _Layer, digest: str, entry: dict[str, Any], want: str, cache_key: str) -> int:
        chunks = layer.toc.chunks(str(entry["name"]))

        def write(out: int) -> None:
            whole = hashlib.sha256()
            for chunk in chunks:
                data = self._chunk(layer, digest, chunk)
                whole.update(data)
                write_all(out, data)
            if "sha256:" + whole.hexdigest() != want:
                raise ValueError(f"the file does not match its digest {want}")

        return self.cache.put(cache_key, write)

    def _chunk(self, layer: _Layer, digest: str, chunk: esgz.Chunk) -> bytes:
        """One chunk, fetched as its whole gzip member and checked against its digest (read_chunk)."""
        at = bisect.bisect_right(layer.ends, chunk.offset)
        end = layer.ends[at] if at < len(layer.ends) else int(self.layers[digest]["size"])
        member = self.client.get_range(self.repository, digest, chunk.offset, end - chunk.offset)
        data = esgz.read_chunk(io.BytesIO(member), dataclasses.replace(chunk, offset=0))
        # kept compressed too, for a pull of the image (checked there as a part of the whole blob)
        key = member_key(digest, chunk.offset, len(member))
        os.close(self.cache.put(key, lambda fd: write_all(fd, member), evict=False))  # (the file's put evicts)
        return data


def from_spec(path: str) -> RegistryFetcher:
    """The fetcher a spec file (prepare.py writes it) describes, its prefetch started."""
    with open(path, encoding="utf-8") as f:
        fetcher = RegistryFetcher(json.load(f))
    fetcher.prefetch()
    return fetcher
