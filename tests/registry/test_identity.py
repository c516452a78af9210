"""Images keep their identity on every exchange: a foreign image is stored byte for byte, and a pull or import
fetches only the layers the store does not hold. Cross-checked with buildah, skopeo and umoci."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.conftest import Tool, dockerfile, static_busybox
from tests.registry.conftest import Registry
from tests.support import buildah_limits


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, timeout=120).stdout


def blob_gets(registry: Registry, digests: set[str]) -> int:
    """GETs of these blobs that the registry logged."""
    return sum(
        1
        for line in registry.log.read_text().splitlines()
        if '"GET /v2/' in line and any(f"/blobs/{d} " in line for d in digests)
    )


class Buildah:
    """buildah in a private store (vfs: no mounts), removed with everything in it afterwards."""

    def __init__(self, work: Path) -> None:
        self.root, self.runroot = work / "buildah-storage", work / "buildah-run"
        self.env = {**os.environ, "BUILDAH_ISOLATION": "chroot"}

    def __call__(self, *args: str) -> str:
        command = ["buildah", "--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver", "vfs"]
        done = subprocess.run([*command, *args], capture_output=True, text=True, env=self.env, timeout=300)
        assert done.returncode == 0, f"buildah {args}: {done.stderr}"
        return done.stdout

    def close(self) -> None:
        if self.root.exists():
            subprocess.run(["buildah", "--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver",
                            "vfs", "rmi", "--all", "--force"], capture_output=True, env=self.env)  # fmt: skip
            shutil.rmtree(self.root, ignore_errors=True)
            shutil.rmtree(self.runroot, ignore_errors=True)


@pytest.fixture
def buildah(tmp_path: Path) -> Iterator[Buildah]:
    for tool in ("buildah", "skopeo"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is needed")
    busybox = static_busybox()
    if busybox is None:
        pytest.skip("busybox-static is not installed")
    b = Buildah(tmp_path)
    try:
        yield b
    finally:
        b.close()


def buildah_image(buildah: Buildah, tmp_path: Path, registry: Registry, fmt: str) -> tuple[str, str, bytes]:
    """A FROM scratch + COPY busybox image built and pushed by buildah: (reference, manifest digest, config)."""
    ctx = tmp_path / "buildah-ctx"
    ctx.mkdir()
    shutil.copy(str(static_busybox()), ctx / "busybox")
    dockerfile(ctx, "FROM scratch\nCOPY busybox /bin/busybox\nLABEL made.by=buildah\n")
    buildah("bud", "--isolation", "chroot", *buildah_limits(), "--format", fmt, "-t", "localhost/ident:1", str(ctx))
    image_id = buildah("images", "--no-trunc", "--format", "{{.ID}}", "localhost/ident:1").strip()
    ref = f"{registry.address}/buildah/ident:{fmt}"
    buildah("push", "--tls-verify=false", "localhost/ident:1", f"docker://{ref}")
    manifest = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}")
    config = skopeo("inspect", "--tls-verify=false", "--config", "--raw", f"docker://{ref}")
    assert sha256(config) == json.loads(manifest)["config"]["digest"] == "sha256:" + image_id.removeprefix("sha256:")
    return ref, sha256(manifest), config


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_a_buildah_image_keeps_its_id_and_digests_through_pull_and_push(
    buildah: Buildah, registry: Registry, tmp_path: Path, fmt: str
) -> None:
    ref, manifest_digest, config = buildah_image(buildah, tmp_path, registry, fmt)
    store = Tool(tmp_path / "store")
    store.run("pull", ref, "--insecure")
    assert store.inspect(ref)["Id"] == sha256(config)  # the image id is buildah's config digest
    back = f"{registry.address}/back/ident:{fmt}"
    pushed = store.run("push", ref, back, "--insecure")
    assert manifest_digest in pushed.stdout
    assert sha256(skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{back}")) == manifest_digest
    assert skopeo("inspect", "--tls-verify=false", "--config", "--raw", f"docker://{back}") == config


def layout_manifest(layout: Path, name: str) -> tuple[str, bytes]:
    """The digest and bytes of the manifest the layout's index names `name`."""
    index = json.loads((layout / "index.json").read_bytes())
    entry = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == name)
    return entry["digest"], (layout / "blobs" / "sha256" / entry["digest"].removeprefix("sha256:")).read_bytes()


def test_layouts_written_by_skopeo_and_umoci_import_with_their_config_digest(
    buildah: Buildah, registry: Registry, tmp_path: Path
) -> None:
    if shutil.which("umoci") is None:
        pytest.skip("umoci is needed")
    ref, manifest_digest, config = buildah_image(buildah, tmp_path, registry, "oci")
    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:copied")
    assert layout_manifest(layout, "copied")[0] == manifest_digest  # skopeo copied it as it was
    subprocess.run(
        ["umoci", "config", "--image", f"{layout}:copied", "--tag", "changed", "--config.label", "by=umoci"],
        check=True,
        capture_output=True,
    )
    store = Tool(tmp_path / "store")
    for name in ("copied", "changed"):
        digest, manifest = layout_manifest(layout, name)
        store.run("import", f"{layout}:{name}", "-t", name)
        assert store.inspect(name)["Id"] == json.loads(manifest)["config"]["digest"]
        out = tmp_path / f"out-{name}"
        store.run("export", name, "-o", str(out))
        assert layout_manifest(out, f"{name}:latest")[0] == digest  # the manifest too, byte for byte
    assert store.inspect("copied")["Id"] == sha256(config)


def test_a_docker_archive_keeps_its_config_and_gets_one_manifest(
    buildah: Buildah, registry: Registry, tmp_path: Path
) -> None:
    ref, _, config = buildah_image(buildah, tmp_path, registry, "docker")
    archive = tmp_path / "ident.tar"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"docker-archive:{archive}:ident:1")
    with tarfile.open(archive) as tar:
        entry = json.loads(tar.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]
        in_archive = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
    assert in_archive == config
    digests = []
    for name in ("one", "two"):
        store = Tool(tmp_path / name)
        store.run("import", str(archive), "-t", "ident")
        assert store.inspect("ident")["Id"] == sha256(in_archive)  # the archive's config file, as it is
        out = tmp_path / f"layout-{name}"
        store.run("export", "ident", "-o", str(out))
        digests.append(layout_manifest(out, "ident:latest")[0])
    assert digests[0] == digests[1]  # the manifest we make for an archive is the same on every import


def test_a_pull_fetches_only_the_layer_the_store_lacks(
    tool: Tool, registry: Registry, ctx: Path, tmp_path: Path
) -> None:
    dockerfile(ctx, "FROM busybox\nRUN echo top > /top\n")
    tool.build(ctx, "-t", "three-layers")
    layers = tool.inspect("three-layers")["Manifest"]["Layers"]  # type: ignore[index]
    assert len(layers) == 3
    digests = {layer["digest"] for layer in layers}
    for name in ("busybox", "three-layers"):
        tool.run("push", name, f"{registry.address}/team/{name}:1", "--insecure")
    other = Tool(tmp_path / "other")
    for name in ("busybox", "three-layers"):
        other.run("pull", f"{registry.address}/team/{name}:1", "--insecure")
    assert blob_gets(registry, digests) == 3  # the base's two layers once, for the first pull
    other.run("rmi", f"{registry.address}/team/three-layers:1")
    assert "Deleted 1 layers" in other.run("prune").stdout  # only the top layer went
    again = other.run("pull", f"{registry.address}/team/three-layers:1", "--insecure")
    assert blob_gets(registry, digests) == 4  # exactly one more blob GET for a layer: the top one
    for layer in layers[:2]:
        assert f"layer {layer['digest']} already present" in again.stdout
    assert other.inspect(f"{registry.address}/team/three-layers:1")["Id"] == tool.inspect("three-layers")["Id"]


def recompress(layout: Path, name: str) -> None:
    """Replace the layout's image `name` by the same image with its layers gzipped at level 1 (other bytes)."""
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_bytes())
    entry = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == name)
    manifest = json.loads((blobs / entry["digest"].removeprefix("sha256:")).read_bytes())
    for layer in manifest["layers"]:
        plain = gzip.decompress((blobs / layer["digest"].removeprefix("sha256:")).read_bytes())
        data = gzip.compress(plain, compresslevel=1, mtime=0)
        (blobs / sha256(data).removeprefix("sha256:")).write_bytes(data)
        layer.update(digest=sha256(data), size=len(data))
    data = json.dumps(manifest).encode()
    (blobs / sha256(data).removeprefix("sha256:")).write_bytes(data)
    entry.update(digest=sha256(data), size=len(data))
    (layout / "index.json").write_text(json.dumps(index))


def test_a_layer_held_only_as_a_directory_fetches_the_blob_the_manifest_names(
    registry: Registry, tmp_path: Path
) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is needed")
    busybox = static_busybox()
    if busybox is None:
        pytest.skip("busybox-static is not installed")
    ctx = tmp_path / "busybox"
    ctx.mkdir()
    shutil.copy(Path(__file__).resolve().parents[2] / "examples" / "busybox" / "Dockerfile", ctx / "Dockerfile")
    shutil.copy(busybox, ctx / "busybox")
    store = Tool(tmp_path / "store")  # its own store: the pull below gives the built image another manifest
    store.build(ctx, "-t", "busybox")
    built = store.inspect("busybox")
    layout = tmp_path / "layout"
    store.run("export", "busybox", "-o", str(layout))
    ref = f"{registry.address}/recompressed/busybox:1"
    recompress(layout, "busybox:latest")
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:busybox:latest", f"docker://{ref}")
    manifest = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}")
    ours = {layer["digest"] for layer in built["Manifest"]["Layers"]}  # type: ignore[index]
    theirs = {layer["digest"] for layer in json.loads(manifest)["layers"]}
    assert not ours & theirs  # the same layers, compressed to other bytes
    pulled = store.run("pull", ref, "--insecure")
    assert blob_gets(registry, theirs) == len(theirs)  # the store cannot make those bytes: they are fetched
    assert pulled.stdout.count("its content is already present, fetching the blob the manifest names") == len(theirs)
    assert store.inspect(ref)["Id"] == built["Id"]
    back = f"{registry.address}/back/busybox:1"
    store.run("push", ref, back, "--insecure")
    assert sha256(skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{back}")) == sha256(manifest)


def test_an_index_is_kept_as_received_while_its_image_is(buildah: Buildah, registry: Registry, tmp_path: Path) -> None:
    _, manifest_digest, config = buildah_image(buildah, tmp_path, registry, "oci")
    buildah("manifest", "create", "localhost/list:1")
    buildah("manifest", "add", "localhost/list:1", "localhost/ident:1")
    listed = f"{registry.address}/buildah/list:1"
    buildah("manifest", "push", "--all", "--tls-verify=false", "localhost/list:1", f"docker://{listed}")
    index = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{listed}")
    assert json.loads(index)["manifests"][0]["digest"] == manifest_digest
    store = Tool(tmp_path / "store")
    store.run("pull", listed, "--insecure")
    assert store.inspect(listed)["Id"] == sha256(config)
    kept = store.root / "blobs" / "sha256" / sha256(index).removeprefix("sha256:")
    store.run("prune")
    assert kept.read_bytes() == index  # the index as received, and prune keeps it while the image is stored
    store.run("rmi", listed)
    store.run("prune")
    assert not kept.exists()
