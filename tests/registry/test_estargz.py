"""eStargz through a real registry: skopeo and umoci read what `push --estargz` and `build --estargz` make, every
TOC and chunk checks against the manifest, a pull keeps the blobs and annotations byte for byte, and umoci's
unpack gives the rootfs our mount shows."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from imagebuild.layer import estargz as esgz
from tests.image.conftest import Tool, dockerfile
from tests.registry.conftest import Registry
from tests.support import snapshot

ADDED = (esgz.TOC_NAME, esgz.NO_PREFETCH_LANDMARK)


def skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, timeout=180).stdout


@pytest.fixture
def clients() -> None:
    for name in ("skopeo", "umoci"):
        if shutil.which(name) is None:
            pytest.skip(f"{name} (Debian package) is needed to cross-check")


def check_layers(layout: Path, manifest: dict[str, Any], config: dict[str, Any]) -> list[esgz.Toc]:
    """Every layer of a layout's image is eStargz whose TOC and chunks match the manifest's annotations."""
    tocs = []
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        blob = (layout / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")).read_bytes()
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
        toc = esgz.verify(io.BytesIO(blob), len(blob), layer["annotations"][esgz.TOC_DIGEST_ANNOTATION])
        tar = gzip.decompress(blob)
        assert "sha256:" + hashlib.sha256(tar).hexdigest() == diff_id
        assert layer["annotations"][esgz.UNCOMPRESSED_SIZE_ANNOTATION] == str(len(tar))
        tocs.append(toc)
    return tocs


@pytest.mark.usefixtures("clients")
def test_an_estargz_push_is_read_by_skopeo_and_umoci_and_unpacks_as_our_mount(
    tool: Tool, registry: Registry, ctx: Path, tmp_path: Path, mounted_image: Any
) -> None:
    (ctx / "big").write_bytes(os.urandom(9 << 20))  # three chunks
    (ctx / "small.txt").write_text("hello\n")
    os.symlink("small.txt", ctx / "link")
    dockerfile(ctx, "FROM busybox\nCOPY . /data/\n")
    tool.build(ctx, "-t", "esgz-src")
    ref = f"{registry.address}/lazy/app:1"
    pushed = tool.run("push", "esgz-src", ref, "--insecure", "--estargz")
    manifest_raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}")
    digest = "sha256:" + hashlib.sha256(manifest_raw).hexdigest()
    assert digest in pushed.stdout
    manifest = json.loads(manifest_raw)
    config = json.loads(skopeo("inspect", "--tls-verify=false", "--config", "--raw", f"docker://{ref}"))
    plain = tool.inspect("esgz-src")
    assert len(config["rootfs"]["diff_ids"]) == len(plain["RootFS"]["Layers"])  # type: ignore[arg-type]

    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:esgz")
    tocs = check_layers(layout, manifest, config)
    assert len(tocs[-1].chunks("data/big")) == 3

    # a second push makes the same bytes: nothing is sent
    again = tool.run("push", "esgz-src", ref, "--insecure", "--estargz")
    assert digest in again.stdout and "0 blob(s) sent" in again.stdout

    # a pull keeps the manifest, blobs and annotations byte for byte, and our reader finds each TOC in the store
    tool.run("pull", ref, "--insecure")
    assert tool.inspect(ref)["Manifest"] == {"Layers": manifest["layers"]}
    assert (tool.root / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes() == manifest_raw
    for layer, toc in zip(manifest["layers"], tocs, strict=True):
        with open(tool.root / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:"), "rb") as f:
            assert esgz.read_toc(f, layer["size"]).digest == toc.digest

    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:esgz", str(bundle)], check=True, capture_output=True)
    ours = snapshot(mounted_image(ref))
    assert snapshot(bundle / "rootfs") == ours
    # the same files as the plain image, and the two eStargz adds to each layer
    assert {k: v for k, v in ours.items() if k not in ADDED} == snapshot(mounted_image("esgz-src"))
    assert all(name in ours for name in ADDED)


@pytest.mark.usefixtures("clients")
def test_build_estargz_stores_an_estargz_image_that_pushes_as_it_is(
    tool: Tool, registry: Registry, ctx: Path, tmp_path: Path
) -> None:
    (ctx / "file").write_text("built\n")
    dockerfile(ctx, "FROM busybox\nCOPY file /file\n")
    built = tool.build(ctx, "--estargz", "-t", "esgz-built")
    assert "eStargz:" in built.stdout
    image = tool.inspect("esgz-built")
    layers = image["Manifest"]["Layers"]  # type: ignore[index]
    assert all(esgz.TOC_DIGEST_ANNOTATION in layer["annotations"] for layer in layers)
    assert tool.image_id(built) == image["Id"]
    assert tool.run("run", "--rm", "esgz-built", "cat", "/file").stdout == "built\n"
    ref = f"{registry.address}/lazy/built:1"
    pushed = tool.run("push", "esgz-built", ref, "--insecure")
    manifest_raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}")
    assert json.loads(manifest_raw)["layers"] == layers
    again = tool.run("push", "esgz-built", ref, "--insecure", "--estargz")  # eStargz already: pushed as stored
    digest = "sha256:" + hashlib.sha256(manifest_raw).hexdigest()
    assert digest in pushed.stdout and digest in again.stdout and "0 blob(s) sent" in again.stdout
    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:built")
    config = json.loads(skopeo("inspect", "--tls-verify=false", "--config", "--raw", f"docker://{ref}"))
    check_layers(layout, json.loads(manifest_raw), config)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:built", str(bundle)], check=True, capture_output=True)
    assert (bundle / "rootfs" / "file").read_text() == "built\n"


def write_layout(layout: Path, layer: bytes, annotations: dict[str, str]) -> str:
    """An OCI layout holding one image of one layer: the layer blob as given, annotated. Returns its config."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return digest

    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}})
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config.encode()),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(layer),
                    "size": len(layer), "annotations": annotations}],
    }  # fmt: skip
    data = json.dumps(manifest).encode()
    entry = {"mediaType": manifest["mediaType"], "digest": put(data), "size": len(data),
             "annotations": {"org.opencontainers.image.ref.name": "foreign"}}  # fmt: skip
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return config


@pytest.mark.usefixtures("clients")
def test_an_estargz_image_made_elsewhere_pulls_byte_for_byte_and_its_toc_is_found(
    tool: Tool, registry: Registry, tmp_path: Path, mounted_image: Any
) -> None:
    from tests.unit.test_estargz import go_style_blob

    files = {"etc/motd": b"made elsewhere\n", "bin/tool": os.urandom(3000)}
    blob, toc_digest = go_style_blob(files)
    annotations = {esgz.TOC_DIGEST_ANNOTATION: toc_digest, esgz.UNCOMPRESSED_SIZE_ANNOTATION: "123", "x.other": "kept"}
    layout = tmp_path / "layout"
    config = write_layout(layout, blob, annotations)
    ref = f"{registry.address}/elsewhere/esgz:1"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:foreign", f"docker://{ref}")
    manifest_raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}")
    tool.run("pull", ref, "--insecure")
    image = tool.inspect(ref)
    assert image["Id"] == "sha256:" + hashlib.sha256(config.encode()).hexdigest()
    assert image["Manifest"] == {"Layers": json.loads(manifest_raw)["layers"]}
    (layer,) = json.loads(manifest_raw)["layers"]
    assert layer["annotations"] == annotations
    stored = tool.root / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
    assert stored.read_bytes() == blob
    with open(stored, "rb") as f:
        toc = esgz.verify(f, len(blob), toc_digest)
    assert {e["name"] for e in toc.entries} == {esgz.NO_PREFETCH_LANDMARK, *files}
    root = mounted_image(ref)
    for name, data in files.items():
        assert (root / name).read_bytes() == data
    # pushed back as it is: eStargz already, so --estargz changes nothing
    back = f"{registry.address}/elsewhere/back:1"
    pushed = tool.run("push", ref, back, "--insecure", "--estargz")
    assert "sha256:" + hashlib.sha256(manifest_raw).hexdigest() in pushed.stdout
