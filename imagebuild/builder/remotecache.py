"""The build cache shared through a registry, as the builder sees it: docker buildx's `--cache-from` and
`--cache-to` flags read, the records a build looks up, and the ones it writes.

`--cache-from type=registry,ref=REF` (repeatable; a bare REF means the same): every RUN, COPY and ADD whose
cache key the local store does not know is looked up in each REF in turn; a hit's layer is fetched, checked
against its digest and diff_id, and stored as if the step had been built here, with the date it was built, so
the image id is the one the writer got. `--cache-to type=registry,ref=REF[,mode=min|max]`: after the build,
the records of the final stage's steps (min, the default, as in BuildKit) or of every stage built (max: each
stage the target needs, whichever thread built it, in Dockerfile order) are written to REF with their layers
(imagebuild/transport/buildcache.py holds the format).

Whoever can push to REF decides what builds that read it reuse: trust a cache REF as you trust a base image.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from imagebuild.builder import optionfields
from imagebuild.builder.state import StageState
from imagebuild.errors import BuildError
from imagebuild.store.images import Store
from imagebuild.transport import buildcache
from imagebuild.transport.registry import Client, Reference

Lookup = Callable[[str], dict[str, Any] | None]
MODES = ("min", "max")


@dataclass(frozen=True)
class CacheSpec:
    ref: Reference
    mode: str = "min"
    ignore_error: bool = False  # --cache-to ...,ignore-error=true: a failed export is a warning, not a failure


def parse_spec(text: str, flag: str) -> CacheSpec:
    """`type=registry,ref=REF[,mode=min|max]`, or a bare REF (buildx reads it as type=registry)."""
    if "=" not in text.split(",", 1)[0]:
        return CacheSpec(Reference.parse(text))
    fields = optionfields.fields(text, flag, "type=registry,ref=HOST/NAME:cache")
    kind = fields.pop("type", "registry")
    if kind != "registry":
        raise BuildError(f"{flag} type={kind} is not supported: use type=registry,ref=HOST/NAME:TAG")
    if "ref" not in fields:
        raise BuildError(f"{flag} '{text}' names no ref: add ref=HOST/NAME:TAG")
    ref = Reference.parse(fields.pop("ref"))
    mode = fields.pop("mode", "min")
    if mode not in MODES or (mode != "min" and flag == "--cache-from"):
        raise BuildError(f"{flag} mode={mode}: use mode=min or mode=max (with --cache-to)")
    ignore = fields.pop("ignore-error", "false") if flag == "--cache-to" else "false"
    if ignore not in ("true", "false"):
        raise BuildError(f"{flag} ignore-error={ignore}: use ignore-error=true or false")
    if fields:
        raise BuildError(
            f"{flag} {', '.join(sorted(fields))}: not an option of type=registry (ref=, mode=, ignore-error=)"
        )
    return CacheSpec(ref, mode, ignore == "true")


class Sources:
    """Every `--cache-from` REF, read once at the start of the build; `lookup` is what the executor asks.

    As with BuildKit, a cache that cannot be read never fails the build: `warn` is told (one line) and the build
    goes on without that REF; a hit whose layer cannot be fetched is a miss, and that REF is not asked again.

    Stages built at once (scheduler.py) look up from their own threads: the list of REFs still asked and the
    count of hits change under a lock; a layer is fetched outside it (the store keeps a layer stored twice at
    once once), so one stage's download does not hold up another's lookup."""

    def __init__(self, store: Store, specs: Iterable[str], insecure: bool, warn: Callable[[str], None]) -> None:
        self.store = store
        self.warn = warn
        self._lock = threading.Lock()
        self.caches: list[buildcache.RemoteCache] = []
        for text in specs:
            spec = parse_spec(text, "--cache-from")
            client = Client(spec.ref.registry, insecure=insecure, progress=None)
            try:
                self.caches.append(buildcache.RemoteCache.open(spec.ref, client))
            except BuildError as exc:
                warn(f"{exc}; building without it")
        self.hits = 0

    @property
    def records(self) -> int:
        return sum(len(c.records) for c in self.caches)

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The store's cache entry for `key`, made from the first REF that has it; None when none has it."""
        with self._lock:
            caches = list(self.caches)
        for cache in caches:
            try:
                record = cache.fetch(self.store, key)
            except BuildError as exc:
                with self._lock:
                    if cache not in self.caches:
                        continue  # another stage lost it at the same time, and said so
                    self.caches.remove(cache)
                self.warn(f"{exc}; building the step, and not asking {cache.ref} again")
                continue
            if record is not None:
                entry = buildcache.record_dict(record)
                self.store.cache_put(key, entry)
                with self._lock:
                    self.hits += 1
                return entry
        return None


def records(store: Store, final: StageState, stages: Iterable[StageState], mode: str) -> list[buildcache.Record]:
    """What `--cache-to` writes: the final stage's steps (min), or every built stage's (max), each key once; the
    blobs of their layers are made now, those not made yet."""
    chosen = [final] if mode == "min" else [*stages, final]
    seen: dict[str, buildcache.Record] = {}
    for state in chosen:
        for key, layer, created in state.steps:
            if key not in seen:
                seen[key] = buildcache.Record(key, store.concrete(layer), created)
    return list(seen.values())


def export(
    store: Store,
    final: StageState,
    stages: Iterable[StageState],
    specs: Iterable[str],
    insecure: bool,
    warn: Callable[[str], None],
) -> list[str]:
    """Write the cache to every `--cache-to` REF; one line per REF saying what was written. A REF that cannot
    be written fails the build (the image is built and stored) unless it says ignore-error=true, as in BuildKit."""
    said = []
    stages = list(stages)
    for text in specs:
        spec = parse_spec(text, "--cache-to")
        chosen = records(store, final, stages, spec.mode)
        client = Client(spec.ref.registry, insecure=insecure, progress=None)
        try:
            digest = buildcache.push(store, chosen, spec.ref, client)
        except BuildError as exc:
            if not spec.ignore_error:
                raise BuildError(f"--cache-to {spec.ref}: {exc}") from None
            warn(f"--cache-to {spec.ref}: {exc}; not written (ignore-error=true)")
            continue
        layers = len({r.layer.blob.digest for r in chosen})
        said.append(
            f"Cache: {len(chosen)} step(s), {layers} layer(s) written to {spec.ref} (mode={spec.mode}, {digest}); "
            f"{len(client.sent)} blob(s) sent"
        )
    return said


def check_specs(cache_from: Iterable[str], cache_to: Iterable[str]) -> None:
    """Refuse a malformed --cache-from or --cache-to before anything is built."""
    for text in cache_from:
        parse_spec(text, "--cache-from")
    for text in cache_to:
        parse_spec(text, "--cache-to")
