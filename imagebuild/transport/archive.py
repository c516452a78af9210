"""docker-archive: the tarball `docker save` writes and `docker load` reads (manifest.json, config, layer tars)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import lzma
import os
import tarfile
import zlib
from typing import BinaryIO

from imagebuild.errors import BuildError
from imagebuild.store.images import Image, Store, normalize_tag
from imagebuild.transport.common import Say, Stager, decompress_layer, quiet


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def export_docker_archive(store: Store, image: Image, tags: list[str], out: BinaryIO) -> None:
    """A deterministic docker-archive of `image` named by `tags`: layers as uncompressed tars."""
    config_name = image.id.removeprefix("sha256:") + ".json"
    layer_names = [layer.diff_id.removeprefix("sha256:") + "/layer.tar" for layer in image.layers]
    manifest = [{"Config": config_name, "RepoTags": [normalize_tag(t) for t in tags], "Layers": layer_names}]
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, layer in sorted(zip(layer_names, image.layers, strict=True)):
            directory = tarfile.TarInfo(name.split("/")[0])
            directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(directory)
            _add(tar, name, decompress_layer(store.blobs.read_bytes(layer.blob.digest), layer.blob.digest))
        _add(tar, config_name, store.blobs.read_bytes(image.id))
        _add(tar, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode())


# what a truncated or corrupt tarball raises while its members are read (gzip.BadGzipFile is an OSError)
DAMAGED = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)
TRUNCATED = "'{path}' is a truncated or corrupt tarball ({exc}): copy or save it again; nothing was imported"


def import_docker_archive(store: Store, path: str, tags: list[str], say: Say = quiet) -> str:
    """Import the archive's image. The config is stored as the archive's file, so the image id is its digest;
    the archive has no manifest, so we make one: OCI, each layer tar gzipped deterministically (`compress_gzip`),
    canonical JSON (`make_manifest`): the same archive gives the same manifest digest on every machine."""
    stager = Stager(store, path, say)
    try:
        with _open(path) as tar:
            try:
                return _import(stager, tar, tags)
            except DAMAGED as exc:
                raise BuildError(TRUNCATED.format(path=path, exc=exc)) from None
    finally:
        stager.discard()


def _open(path: str) -> tarfile.TarFile:
    """The tarball (plain, gzip, bzip2 or xz), or one line saying what the file is not."""
    try:
        return tarfile.open(path, "r:*")
    except tarfile.TarError:
        what = "it is empty" if os.path.getsize(path) == 0 else "it is not a tar archive (plain, gzip, bzip2 or xz)"
    except DAMAGED as exc:
        raise BuildError(TRUNCATED.format(path=path, exc=exc)) from None
    except OSError as exc:
        raise BuildError(f"cannot read '{path}': {exc.strerror or exc}; nothing was imported") from None
    raise BuildError(
        f"'{path}' is neither an OCI layout directory nor a docker-archive tarball: {what}; nothing was imported"
    )


def _member(stager: Stager, tar: tarfile.TarFile, name: str) -> BinaryIO:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise stager.fail(f"{name} is missing from the archive") from None
    if not member.isfile():
        raise stager.fail(f"{name} is not a regular file in the archive")
    handle = tar.extractfile(member)
    assert handle is not None
    return handle  # type: ignore[return-value]


def _import(stager: Stager, tar: tarfile.TarFile, tags: list[str]) -> str:
    if "manifest.json" not in tar.getnames():
        raise BuildError(
            f"'{stager.source}' is neither an OCI layout directory nor a docker-archive tarball: it is a tar "
            "archive without a manifest.json; nothing was imported"
        )
    try:
        manifest = json.loads(_member(stager, tar, "manifest.json").read())
        entry = manifest[0]
        if len(manifest) != 1:
            raise stager.fail(f"the archive holds {len(manifest)} images: only one at a time is imported")
        config_name, layer_names = str(entry["Config"]), [str(n) for n in entry["Layers"]]
        repo_tags = [str(t) for t in entry.get("RepoTags") or []]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise stager.fail(f"malformed manifest.json: {exc}") from None
    config_bytes = _member(stager, tar, config_name).read()
    expected = config_name.removesuffix(".json").rsplit("/", 1)[-1]
    if len(expected) == 64 and hashlib.sha256(config_bytes).hexdigest() != expected:
        raise stager.fail(f"{config_name} does not match its digest (corrupt)")
    try:
        diff_ids = json.loads(config_bytes)["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError) as exc:
        raise stager.fail(f"{config_name} has no rootfs.diff_ids ({exc})") from None
    if len(diff_ids) != len(layer_names):
        raise stager.fail("manifest.json and the config disagree on the number of layers")
    for name, diff_id in zip(layer_names, diff_ids, strict=True):
        stager.stage(name, functools.partial(_member, stager, tar, name), str(diff_id), None)
    return stager.commit(config_bytes, tags or repo_tags)
