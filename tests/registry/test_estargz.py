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


def test_an_estargz_push_is_read_by_skopeo_and_umoci_and_unpacks_as_our_mount(
    tool: Tool, registry: Registry, ctx: Path, tmp_path: Path, mounted_image: Any, clients: None
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


def test_build_estargz_stores_an_estargz_image_that_pushes_as_it_is(
    tool: Tool, registry: Registry, ctx: Path, tmp_path: Path, clients: None
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
