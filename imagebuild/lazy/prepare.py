"""What `run --lazy` and `mount --lazy` mount: an image read from a registry (remote.py), its eStargz layers as
skeletons (skeleton.py) in `STORE/lazy/layers/`, and the mount options that make the daemon load the fetcher.

Layers the store holds whole are used as they are. A layer that is not eStargz (plain gzip, or eStargz without
the TOC digest annotation to verify its TOC by) is pulled whole, with one line saying so, and extracted as a
pull extracts it. Skeletons and whole layers are kept, by blob digest, for the next mount of the same image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from imagebuild.errors import BuildError
from imagebuild.layer import extract_layer_tar
from imagebuild.layer.errors import LayerError
from imagebuild.lazy.cache import limit_from_env
from imagebuild.lazy.remote import RemoteImage, RemoteLayer, resolve
from imagebuild.lazy.skeleton import make_skeleton
from imagebuild.oci.digest import sha256_digest
from imagebuild.store.images import Image, Store
from imagebuild.transport.common import decompress_layer
from imagebuild.transport.registry import Client, Reference

FETCHER = "imagebuild.lazy.fetcher.from_spec"


@dataclass(frozen=True)
class LazyImage:
    image: Image
    lowers: list[str]  # top first
    options: list[str]  # the unionfs mount options that load the fetcher (none when every layer is whole)
    log: str  # where the fetcher logs the files it answered EIO for


def lazy_root(store: Store) -> str:
    return os.path.join(store.root, "lazy")


def _write_atomic(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,")


def _whole(client: Client, ref: Reference, layer: RemoteLayer, dest: str) -> None:
    """Pull a layer that cannot be read lazily, check its diff_id and extract it at `dest`."""
    plain = decompress_layer(client.get_blob(ref.repository, layer.blob), layer.blob.digest)
    if sha256_digest(plain) != layer.diff_id:
        raise BuildError(f"{ref}: layer {layer.blob.digest} does not match its diff_id {layer.diff_id}")
    rootless = os.geteuid() != 0
    extract_layer_tar(io.BytesIO(plain), dest, whiteout_form="file" if rootless else "chardev", rootless=rootless)


def _layer_dir(client: Client, remote: RemoteImage, layer: RemoteLayer, root: str, say: Callable[[str], None]) -> str:
    dest = os.path.join(root, "layers", layer.blob.digest.removeprefix("sha256:"))
    if os.path.isdir(dest):
        return dest
    try:
        if layer.toc is None:
            say(
                f"{remote.ref}: layer {layer.blob.digest[7:19]} is not eStargz: pulling it whole "
                f"({layer.blob.size} bytes)"
            )
            _whole(client, remote.ref, layer, dest)
        else:
            make_skeleton(layer.toc, layer.blob.digest, dest)
    except LayerError as exc:
        if not os.path.isdir(dest):  # (else another process made it meanwhile)
            raise BuildError(f"{remote.ref}: layer {layer.blob.digest}: {exc}") from None
    return dest


def prepare(store: Store, ref_text: str, insecure: bool, say: Callable[[str], None]) -> LazyImage:
    """Read `ref` from its registry and make what a lazy mount of it needs."""
    ref = Reference.parse(ref_text)
    client = Client(ref.registry, insecure=insecure)
    remote = resolve(client, ref)
    root = lazy_root(store)
    for sub in ("layers", "tocs", "files", "specs"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    lowers: list[str] = []
    lazy: dict[str, dict[str, object]] = {}
    for layer in reversed(remote.layers):
        whole = store.layer_dir(layer.diff_id)
        if os.path.isdir(whole):
            lowers.append(whole)
            continue
        lowers.append(_layer_dir(client, remote, layer, root, say))
        if layer.toc is not None:
            toc_path = os.path.join(root, "tocs", layer.blob.digest.removeprefix("sha256:") + ".json")
            if not os.path.exists(toc_path):
                _write_atomic(toc_path, layer.toc.raw)
            lazy[layer.blob.digest] = {
                "size": layer.blob.size,
                "toc_offset": layer.toc.offset,
                "toc_digest": layer.toc.digest,
            }
    log = os.path.join(root, "log")
    options: list[str] = []
    if lazy:
        spec = {
            "registry": ref.registry,
            "insecure": insecure,
            "repository": ref.repository,
            "cache": os.path.join(root, "files"),
            "cache_limit": limit_from_env(),
            "tocs": os.path.join(root, "tocs"),
            "log": log,
            "layers": lazy,
        }
        data = json.dumps(spec, sort_keys=True, indent=1).encode()
        spec_path = os.path.join(root, "specs", hashlib.sha256(data).hexdigest() + ".json")
        if not os.path.exists(spec_path):
            _write_atomic(spec_path, data)
        options = [f"fetcher={FETCHER}", f"fetchspec={_escape(spec_path)}"]
    return LazyImage(remote.image, list(dict.fromkeys(lowers)), options, log)
