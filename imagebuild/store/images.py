"""The image store: content-addressed blobs, extracted layer dirs shared by every image, tags and the cache.

Layout under the root:
  blobs/sha256/<hex>     compressed layer tars, configs, manifests (BlobStore: temp -> fsync -> rename)
  layers/<diff hex>/     a layer as a directory, the read-only lower unionfs mounts; one per diff_id
  images.json            {"images": {image id: manifest digest}, "tags": {name:tag: image id},
                          "indexes": {image id: digest of the image index it was chosen from, when it was}}
  images.json.lock       held while the index changes (flock), so that no change made at the same time is lost

Foreign images (pulled or imported) are kept byte for byte: their manifest, config and index blobs are stored
as received, so the image id is the sender's config digest and a push sends the same manifest digest back.
  cache/<key hex>.json   build cache entries; cache/steps/<hex>.json what a step last saw (for explanations);
                         cache/summaries/<image hex>.json the efficiency a build printed for that image
  layerblobs/<diff hex>.json  the blob made of a layer built here, once an image needed it (layerblobs.py)
  containers/<name>/     upper and work dirs of mounted or running images
  caches/<hex>/          the directories of RUN --mount=type=cache (store/caches.py); in no image
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from imagebuild.errors import BuildError
from imagebuild.layer import LayerError, settle_mtimes
from imagebuild.layer._fs import syncfs
from imagebuild.layer.verify import differences, directory_entries, tar_entries
from imagebuild.lazy.cache import lazy_leftovers
from imagebuild.lazy.prune import problems as lazy_problems
from imagebuild.lazy.prune import prune as prune_lazy
from imagebuild.oci import Descriptor, ImageConfig, Manifest, OCIError, descriptor_for, mediatypes, sha256_digest
from imagebuild.store.blobs import BlobError, BlobStore
from imagebuild.store.layerblobs import LayerBlobs, LocalLayer, NullSink, tar_digest
from imagebuild.store.leftovers import clear_leftover, find_leftovers


def default_root() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.environ.get("IMAGEBUILD_ROOT") or os.path.join(base, "imagebuild")


def normalize_tag(ref: str) -> str:
    """`name` means `name:latest`, and docker's canonical `docker.io/library/name` is just `name`."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if ref.startswith(prefix) and "/" not in ref[len(prefix) :].split(":")[0]:
            ref = ref[len(prefix) :]
            break
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


def write_json_atomic(path: str, data: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class Layer:
    diff_id: str
    blob: Descriptor  # the compressed tar


@dataclass(frozen=True)
class Image:
    id: str  # the config digest
    manifest: Manifest
    config: ImageConfig

    @property
    def layers(self) -> list[Layer]:
        return [Layer(d, b) for d, b in zip(self.config.rootfs.diff_ids, self.manifest.layers, strict=True)]


class Store:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        for sub in ("layers", "cache/steps", "containers", "tmp"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        self.blobs = BlobStore(self.root)
        self.layer_blobs = LayerBlobs(self.root, self.blobs, self.layer_dir, _host_owner())
        self._index_path = os.path.join(self.root, "images.json")

    # -- index ----------------------------------------------------------------------------------------------------

    def _index(self) -> dict[str, dict[str, str]]:
        try:
            with open(self._index_path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {"images": {}, "tags": {}, "indexes": {}}
        except (OSError, ValueError) as exc:
            raise BuildError(
                f"the image index {self._index_path} is unreadable ({exc}): run 'imagebuild check'"
            ) from None
        return {
            "images": dict(data.get("images", {})),
            "tags": dict(data.get("tags", {})),
            "indexes": dict(data.get("indexes", {})),
        }

    def _save_index(self, index: dict[str, dict[str, str]]) -> None:
        write_json_atomic(self._index_path, index)

    @contextlib.contextmanager
    def _changing_index(self) -> Iterator[dict[str, dict[str, str]]]:
        """The index to change, read and saved under a lock: changes made at the same time (stages of one
        build pulling their bases, builds in other processes) are all kept, none lost."""
        with open(self._index_path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            index = self._index()
            before = json.dumps(index, sort_keys=True)
            yield index
            if json.dumps(index, sort_keys=True) != before:  # a no-op rebuild's commit and tags write nothing
                self._save_index(index)

    def tags(self) -> dict[str, str]:
        return self._index()["tags"]

    def image_ids(self) -> list[str]:
        return sorted(self._index()["images"])

    def resolve(self, ref: str) -> Image:
        """An image by tag, full id (sha256:...) or unique id prefix."""
        index = self._index()
        image_id = index["tags"].get(normalize_tag(ref)) or index["tags"].get(ref)
        if image_id is None:
            bare = ref.removeprefix("sha256:")
            matches = (
                [i for i in index["images"] if i.removeprefix("sha256:").startswith(bare)] if len(bare) >= 4 else []
            )
            if len(matches) == 1:
                image_id = matches[0]
        if image_id is None or image_id not in index["images"]:
            raise BuildError(
                f"image '{ref}' is not in the store {self.root}: build it, import it, or check 'imagebuild images'"
            )
        try:
            manifest = Manifest.from_json(self.blobs.read_bytes(index["images"][image_id]))
            config = ImageConfig.from_json(self.blobs.read_bytes(manifest.config.digest))
        except (BlobError, OCIError) as exc:
            raise BuildError(
                f"image '{ref}' is damaged in the store {self.root}: {exc}: 'imagebuild check --repair' removes it"
            ) from None
        return Image(image_id, manifest, config)

    def manifest_digest(self, image_id: str) -> str:
        return self._index()["images"][image_id]

    def tag(self, image_id: str, name: str) -> None:
        with self._changing_index() as index:
            index["tags"][normalize_tag(name)] = image_id

    def untag(self, name: str) -> str:
        with self._changing_index() as index:
            image_id = index["tags"].pop(normalize_tag(name), None)
            if image_id is None:
                raise BuildError(f"no tag '{name}' in the store: see 'imagebuild images'")
        return image_id

    def remove_image(self, image_id: str) -> None:
        with self._changing_index() as index:
            index["images"].pop(image_id, None)
            index["indexes"].pop(image_id, None)
            index["tags"] = {t: i for t, i in index["tags"].items() if i != image_id}

    # -- layers ---------------------------------------------------------------------------------------------------

    def layer_dir(self, diff_id: str) -> str:
        return os.path.join(self.root, "layers", diff_id.removeprefix("sha256:"))

    def lower_dirs(self, layers: Sequence[Layer | LocalLayer]) -> list[str]:
        """The directories a union mount of `layers` (bottom first, as an image lists them) stacks: top first, each
        once. Steps that change nothing make the same empty layer again; a layer's lower copy adds nothing the
        higher one does not already show, and unionfs, as overlayfs, refuses a directory given twice."""
        return list(dict.fromkeys(self.layer_dir(layer.diff_id) for layer in reversed(layers)))

    def scratch_dir(self, prefix: str) -> str:
        """A fresh directory under the store's tmp/; 0755, as it may become a layer's (so a rootfs's) root."""
        path = tempfile.mkdtemp(prefix=prefix, dir=os.path.join(self.root, "tmp"))
        os.chmod(path, 0o755)
        return path

    def add_layer(self, layer_dir: str, mtime_clamp: int | None) -> Layer:
        """Store a layer directory and make its blob now (see `capture_layer`)."""
        return self.concrete(self.capture_layer(layer_dir, mtime_clamp))

    def capture_layer(self, layer_dir: str, mtime_clamp: int | None, *, background: bool = False) -> LocalLayer:
        """Store a layer directory as the lower for mounts, named by its diff_id; its blob (the deterministic tar,
        gzipped) is made when an image needs it, or with `background` in the background from now (layerblobs.py).
        A layer already stored (same diff_id) is shared: the new directory is discarded.

        The directory's mtimes become the tar's first (whole seconds; with `mtime_clamp`, SOURCE_DATE_EPOCH, none
        later than it), so the layer mounts here with the times it has wherever it is pulled or imported."""
        settle_mtimes(layer_dir, mtime_clamp)
        # The directory reaches the disk before it becomes a layer (a RUN step's mount syncs nothing: fsync=0),
        # flushed by the kernel while the tar is written through its sha256 (the diff_id) to nowhere.
        flushed = _Flush(layer_dir)
        try:
            diff_id = tar_digest(layer_dir, mtime_clamp, _host_owner(), cast(BinaryIO, NullSink()))
        finally:
            flushed.wait()
        self.keep_layer_dir(layer_dir, diff_id)
        layer = LocalLayer(diff_id, mtime_clamp)
        if background:
            self.layer_blobs.background(layer)
        return layer

    def concrete(self, layer: Layer | LocalLayer) -> Layer:
        """The layer with its blob, made now (or waited for) when it is not made yet."""
        if isinstance(layer, Layer):
            return layer
        return Layer(layer.diff_id, self.layer_blobs.blob(layer))

    def keep_layer_dir(self, directory: str, diff_id: str) -> None:
        """Move a finished layer directory into place as the layer `diff_id`'s, or discard it when that layer is
        stored already (maybe this instant, by a stage or a pull running at the same time: the rename is the
        test, so two at once never both fail or both stay)."""
        target = self.layer_dir(diff_id)
        try:
            if os.path.isdir(target):  # an empty layer's directory would be replaced, under the mounts using it
                raise FileExistsError(errno.EEXIST, "stored already", target)
            os.rename(directory, target)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not os.path.isdir(target):
                raise
            shutil.rmtree(directory, ignore_errors=True)

    def commit(self, config: ImageConfig, layers: Sequence[Layer | LocalLayer]) -> str:
        """Store an image we made; the blobs of its layers are made first, those not made yet."""
        return self.register(make_manifest(config.to_json(), [self.concrete(lay) for lay in layers]), config.to_json())

    def register(self, manifest_bytes: bytes, config_bytes: bytes, index_bytes: bytes | None = None) -> str:
        """Store an image's manifest and config (and the index it was chosen from) exactly as given; its layer
        blobs must be stored already. The image id is the digest of `config_bytes`, which the manifest names."""
        manifest = Manifest.from_json(manifest_bytes)
        given = sha256_digest(config_bytes)
        if given != manifest.config.digest:
            raise BuildError(f"the manifest names the config {manifest.config.digest}, not {given}")
        config_info = self.blobs.put_bytes(config_bytes)
        manifest_info = self.blobs.put_bytes(manifest_bytes)
        index_digest = self.blobs.put_bytes(index_bytes).digest if index_bytes is not None else None
        image_id = config_info.digest
        with self._changing_index() as index:
            index["images"][image_id] = manifest_info.digest
            if index_digest is not None:
                index["indexes"][image_id] = index_digest
            else:
                index["indexes"].pop(image_id, None)
        return image_id

    def layer_pairs(self) -> dict[str, str]:
        """Compressed blob digest -> diff_id, for every layer of every stored image."""
        pairs: dict[str, str] = {}
        for image_id in self.image_ids():
            with contextlib.suppress(Exception):  # an unreadable image pairs nothing; 'check' reports it
                pairs.update((layer.blob.digest, layer.diff_id) for layer in self.resolve(image_id).layers)
        return pairs

    # -- cache ----------------------------------------------------------------------------------------------------

    def cache_get(self, key: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.root, "cache", key + ".json"), encoding="utf-8") as f:
                entry: dict[str, Any] = json.load(f)
        except (OSError, ValueError):
            return None
        if not _cache_entry(entry):
            return None  # damaged: a miss, as an unreadable entry is
        if not os.path.isdir(self.layer_dir(entry["diff_id"])):
            return None  # pruned since
        return entry

    def cache_put(self, key: str, entry: dict[str, Any]) -> None:
        write_json_atomic(os.path.join(self.root, "cache", key + ".json"), entry)

    def summary_get(self, image_id: str) -> dict[str, Any] | None:
        """What a build said of the image `image_id` (its efficiency summary), once worked out: an image id names
        its layers' content, so it holds for good."""
        try:
            with open(self._summary_path(image_id), encoding="utf-8") as f:
                data: dict[str, Any] = json.load(f)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def summary_put(self, image_id: str, summary: dict[str, Any]) -> None:
        write_json_atomic(self._summary_path(image_id), summary)

    def _summary_path(self, image_id: str) -> str:
        return os.path.join(self.root, "cache", "summaries", image_id.removeprefix("sha256:") + ".json")

    def step_get(self, step: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.root, "cache", "steps", step + ".json"), encoding="utf-8") as f:
                data: dict[str, Any] = json.load(f)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("files", {}), dict) else None

    def step_put(self, step: str, entry: dict[str, Any]) -> None:
        if self.step_get(step) != entry:  # a cache hit saw what the step saw last time: nothing to write
            write_json_atomic(os.path.join(self.root, "cache", "steps", step + ".json"), entry)

    # -- consistency ----------------------------------------------------------------------------------------------

    def check(self, repair: bool) -> list[str]:
        """Verify every blob against its digest, every image's manifest, config and layers; list what is wrong.
        With `repair`, remove what is broken (and images that need it) and the leftovers of interrupted work."""
        problems: list[str] = []
        bad: set[str] = set()
        for digest in list(self.blobs.iter_digests()):
            try:
                self.blobs.verify(digest)
            except (BlobError, OSError) as exc:
                problems.append(f"blob {digest}: {exc}")
                bad.add(digest)
        index = self._index()
        for image_id, manifest_digest in sorted(index["images"].items()):
            needed = {manifest_digest, image_id}
            try:
                image = self.resolve(image_id)
                needed |= {layer.blob.digest for layer in image.layers}
                missing_dirs = [lay.diff_id for lay in image.layers if not os.path.isdir(self.layer_dir(lay.diff_id))]
            except Exception as exc:  # noqa: BLE001 (check reports whatever a damaged image raises, then goes on)
                problems.append(f"image {image_id}: unreadable ({exc})")
                missing_dirs = []
                needed.add("unreadable")
            broken = sorted((needed & bad) | {d for d in needed if d != "unreadable" and not self.blobs.has(d)})
            if broken or missing_dirs or "unreadable" in needed:
                problems.append(f"image {image_id}: needs {', '.join(broken + missing_dirs) or 'a readable manifest'}")
                if repair:
                    self.remove_image(image_id)
        problems.extend(self._check_layers(index, bad, repair))
        for leftover in find_leftovers(self.root):  # before tmp/ below: a leftover may be mounted there
            failed = clear_leftover(leftover) if repair else None
            problems.append(leftover.problem if failed is None else f"{leftover.problem}; not cleared: {failed}")
        for path in lazy_leftovers(os.path.join(self.root, "lazy")):
            problems.append(f"leftover of interrupted lazy work: {path}")
            if repair:
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)
        problems.extend(lazy_problems(os.path.join(self.root, "lazy"), repair))
        leftovers = os.listdir(os.path.join(self.root, "tmp"))
        if leftovers:
            problems.append(f"{len(leftovers)} leftover(s) of interrupted work in {os.path.join(self.root, 'tmp')}")
        if repair:
            for digest in bad:
                self.blobs.delete(digest)
            for name in leftovers:
                path = os.path.join(self.root, "tmp", name)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)
            self.blobs.clean_tmp(older_than=0)
        return problems

    def _check_layers(self, index: dict[str, dict[str, str]], bad: set[str], repair: bool) -> list[str]:
        """Each stored layer directory against its tar, once per layer: one line per layer that differs."""
        seen: dict[str, str] = {}  # diff_id -> a blob holding its tar
        for image_id in sorted(index["images"]):
            with contextlib.suppress(Exception):  # an unreadable image is reported above
                for layer in self.resolve(image_id).layers:
                    if layer.blob.digest not in bad and self.blobs.has(layer.blob.digest):
                        seen.setdefault(layer.diff_id, layer.blob.digest)
        problems: list[str] = []
        for diff_id, blob in sorted(seen.items()):
            directory = self.layer_dir(diff_id)
            if not os.path.isdir(directory):
                continue  # reported with its image
            found = layer_differences(self, directory, blob)
            if found:
                more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
                hint = "; not repaired: rebuild the image, or rmi, prune and pull or import it again" if repair else ""
                problems.append(
                    f"layer {diff_id}: the directory {directory} and the tar differ: {'; '.join(found[:3])}{more}{hint}"
                )
        return problems

    # -- garbage collection ---------------------------------------------------------------------------------------

    def prune_lazy(self, cache_limit: int) -> tuple[int, int, int]:
        """Prune STORE/lazy (imagebuild.lazy.prune): layer skeletons, TOCs and specs no lazy mount uses, leftovers,
        fetched files beyond `cache_limit` bytes; returns (layer directories removed, other files removed, bytes
        of fetched files freed)."""
        return prune_lazy(os.path.join(self.root, "lazy"), cache_limit)

    def prune(self) -> tuple[int, int]:
        """Delete layers and blobs no image refers to; returns (layers removed, bytes of blobs freed)."""
        keep_blobs: set[str] = set()
        keep_layers: set[str] = set()
        index = self._index()
        keep_blobs.update(d for i, d in index["indexes"].items() if i in index["images"])
        for image_id, manifest_digest in index["images"].items():
            keep_blobs.update({manifest_digest, image_id})
            image = self.resolve(image_id)
            keep_blobs.update(layer.blob.digest for layer in image.layers)
            keep_layers.update(layer.diff_id.removeprefix("sha256:") for layer in image.layers)
        removed = 0
        for name in os.listdir(os.path.join(self.root, "layers")):
            if name not in keep_layers:
                shutil.rmtree(os.path.join(self.root, "layers", name), ignore_errors=True)
                removed += 1
        freed = 0
        for digest in list(self.blobs.iter_digests()):
            if digest not in keep_blobs:
                freed += self.blobs.size(digest)
                self.blobs.delete(digest)
        self.layer_blobs.forget_missing(lambda diff_id: diff_id.removeprefix("sha256:") in keep_layers)
        shutil.rmtree(os.path.join(self.root, "cache"), ignore_errors=True)
        os.makedirs(os.path.join(self.root, "cache", "steps"))
        return removed, freed


def _cache_entry(entry: object) -> bool:
    """Whether a cache entry read from disk has the shape `cache_put` wrote: a layer's diff_id, and its blob
    (a layer from a registry's cache) or the SOURCE_DATE_EPOCH its tar is written with (a layer built here)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("diff_id"), str) or not entry["diff_id"]:
        return False
    if "blob" not in entry:
        epoch = entry.get("epoch")
        return epoch is None or (isinstance(epoch, int) and not isinstance(epoch, bool))
    try:
        Descriptor.from_dict(entry.get("blob"))
    except OCIError:
        return False
    return True


def cached_layer(entry: dict[str, Any]) -> Layer | LocalLayer:
    """The layer a cache entry (`Store.cache_get`) names."""
    if "blob" in entry:
        return Layer(entry["diff_id"], Descriptor.from_dict(entry["blob"]))
    return LocalLayer(entry["diff_id"], entry.get("epoch"))


def make_manifest(config_bytes: bytes, layers: list[Layer]) -> bytes:
    """The manifest we write for an image we make (a build, a docker-archive import): OCI, canonical JSON."""
    manifest = Manifest(config=descriptor_for(mediatypes.OCI_CONFIG, config_bytes), layers=[lay.blob for lay in layers])
    return manifest.to_json()


def layer_differences(store: Store, directory: str, blob: str) -> list[str]:
    """How a layer directory differs from the tar in `blob` (see imagebuild.layer.verify); [] when they agree."""
    try:
        with store.blobs.open(blob, verify=False) as src:  # verified by check already
            tar = tar_entries(src)
        mine = directory_entries(directory, host_owner=_host_owner())
    except (LayerError, BlobError, OSError) as exc:
        return [f"unreadable ({exc})"]
    return differences(mine, tar, rootless=os.geteuid() != 0)


def _host_owner() -> tuple[int, int] | None:
    """Building as an ordinary user, the files the user owns are the image's root's."""
    return None if os.geteuid() == 0 else (os.geteuid(), os.getegid())


class _Flush:
    """syncfs(2) of the filesystem holding `path`, in a thread of its own (the kernel does the work, without the
    GIL); `wait` returns when it is done and raises what it raised."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="syncfs", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            syncfs(self._fd)
        except OSError as exc:
            self._error = exc
        finally:
            os.close(self._fd)

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error
