"""The OCI image layout: `oci-layout`, `index.json` (tags as org.opencontainers.image.ref.name), blobs/sha256."""

from __future__ import annotations

import functools
import json
import os
import shutil
from typing import BinaryIO

from imagebuild.errors import BuildError
from imagebuild.oci import Descriptor, Index, Manifest, OCIError, mediatypes, validate_digest
from imagebuild.store.images import Image, Store
from imagebuild.transport.common import Say, Stager, quiet

REF_NAME = "org.opencontainers.image.ref.name"


def export_oci_layout(store: Store, image: Image, ref_name: str | None, dest: str) -> None:
    """Write (or add to) an OCI layout at `dest`; the image is named `ref_name` in its index when given."""
    index_path = os.path.join(dest, "index.json")
    manifests = _existing_manifests(dest, index_path)
    blobs = os.path.join(dest, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    manifest_digest = store.manifest_digest(image.id)
    for digest in (manifest_digest, image.id, *(layer.blob.digest for layer in image.layers)):
        target = os.path.join(blobs, digest.removeprefix("sha256:"))
        if not os.path.exists(target):
            shutil.copyfile(store.blobs.path(digest), target + ".tmp")
            os.replace(target + ".tmp", target)
    with open(os.path.join(dest, "oci-layout"), "w", encoding="utf-8") as f:
        json.dump({"imageLayoutVersion": mediatypes.OCI_LAYOUT_VERSION}, f)
    annotations = {REF_NAME: ref_name} if ref_name else {}
    manifests = [m for m in manifests if not ref_name or m.annotations.get(REF_NAME) != ref_name]
    manifests.append(
        Descriptor(
            media_type=mediatypes.OCI_MANIFEST,
            digest=manifest_digest,
            size=store.blobs.size(manifest_digest),
            annotations=annotations,
        )
    )
    data = Index(manifests=manifests, media_type=mediatypes.OCI_INDEX).to_json()
    with open(index_path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(index_path + ".tmp", index_path)


def _existing_manifests(dest: str, index_path: str) -> list[Descriptor]:
    """What an existing layout at `dest` lists already; nothing for a new or empty directory. Anything else there
    is refused before a byte is written: an export never scatters blobs into a directory of other files."""
    if not os.path.lexists(dest):
        return []
    if not os.path.isdir(dest):
        raise BuildError(f"'{dest}' exists and is not a directory: an OCI layout is a directory; give a new path")
    if not os.path.isfile(os.path.join(dest, "oci-layout")):
        if os.listdir(dest):
            raise BuildError(
                f"'{dest}' is a directory that is not an OCI layout (no oci-layout file): give a new or empty "
                "directory, or a layout to add the image to"
            )
        return []
    if not os.path.exists(index_path):
        return []
    try:
        with open(index_path, "rb") as f:
            return Index.from_json(f.read()).manifests
    except OCIError as exc:
        raise BuildError(
            f"'{dest}': its index.json is not an OCI image index ({exc}): give a new directory, or repair the layout"
        ) from None


def import_oci_layout(store: Store, path: str, ref_name: str | None, tags: list[str], say: Say = quiet) -> str:
    """Import one image of the layout; its manifest, config and index blobs are stored as they are."""
    stager = Stager(store, path, say)
    try:
        return _import(stager, path, ref_name, tags)
    finally:
        stager.discard()


def _blob(stager: Stager, root: str, descriptor: Descriptor) -> BinaryIO:
    try:
        validate_digest(descriptor.digest)
    except OCIError as exc:
        raise stager.fail(str(exc)) from None
    algorithm, _, hexdigest = descriptor.digest.partition(":")
    try:
        return open(os.path.join(root, "blobs", algorithm, hexdigest), "rb")
    except OSError:
        raise stager.fail(f"blob {descriptor.digest} is missing from the layout") from None


def _read_verified(stager: Stager, root: str, descriptor: Descriptor) -> bytes:
    import hashlib

    with _blob(stager, root, descriptor) as f:
        data = f.read()
    if "sha256:" + hashlib.sha256(data).hexdigest() != descriptor.digest or len(data) != descriptor.size:
        raise stager.fail(f"blob {descriptor.digest} does not match its digest (corrupt or truncated)")
    return data


def _import(stager: Stager, root: str, ref_name: str | None, tags: list[str]) -> str:
    if not os.path.isfile(os.path.join(root, "oci-layout")):
        raise BuildError(
            f"'{root}' is neither an OCI layout directory nor a docker-archive tarball: it is a directory without "
            "an oci-layout file; nothing was imported"
        )
    try:
        with open(os.path.join(root, "index.json"), "rb") as f:
            index = Index.from_json(f.read())
        chosen = _choose(stager, index.manifests, ref_name)
        data = _read_verified(stager, root, chosen)
        index_bytes = None
        if chosen.media_type in mediatypes.INDEX_TYPES:
            nested = Index.from_json(data).manifests
            if not nested:
                raise stager.fail("the image index lists no manifest")
            index_bytes = data
            chosen = next((m for m in nested if m.platform and m.platform.os == "linux"), nested[0])
            data = _read_verified(stager, root, chosen)
        manifest = Manifest.from_json(data)
        config_bytes = _read_verified(stager, root, manifest.config)
        from imagebuild.oci import ImageConfig

        config = ImageConfig.from_json(config_bytes)
    except (OSError, OCIError, ValueError) as exc:
        raise stager.fail(f"malformed layout: {exc}") from None
    if len(config.rootfs.diff_ids) != len(manifest.layers):
        raise stager.fail("the manifest and the config disagree on the number of layers")
    for layer, diff_id in zip(manifest.layers, config.rootfs.diff_ids, strict=True):
        if layer.media_type not in mediatypes.LAYER_TYPES:
            raise stager.fail(f"layer {layer.digest} has an unknown media type {layer.media_type}")
        stager.stage(layer.digest, functools.partial(_blob, stager, root, layer), diff_id, layer)
    name = chosen.annotations.get(REF_NAME) or ref_name
    return stager.commit(config_bytes, tags or ([name] if name and ":" in name else []), data, index_bytes)


def _choose(stager: Stager, manifests: list[Descriptor], ref_name: str | None) -> Descriptor:
    if ref_name is not None:
        for m in manifests:
            if m.annotations.get(REF_NAME) == ref_name:
                return m
        names = ", ".join(sorted(m.annotations.get(REF_NAME, "?") for m in manifests))
        raise stager.fail(f"no image named '{ref_name}' in the layout (it has: {names or 'none'})")
    if len(manifests) != 1:
        names = ", ".join(sorted(m.annotations.get(REF_NAME, "?") for m in manifests))
        raise stager.fail(f"the layout holds {len(manifests)} images ({names}): name one as PATH:REF")
    return manifests[0]
