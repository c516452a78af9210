"""Images in and out: OCI layouts and docker-archives round trip with every digest, and real clients agree."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.image.conftest import Tool, dockerfile
from tests.support import snapshot


@pytest.fixture
def image(tool: Tool, ctx: Path) -> str:
    (ctx / "data").mkdir()
    (ctx / "data" / "file.txt").write_text("payload\n")
    os.symlink("file.txt", ctx / "data" / "link")
    dockerfile(
        ctx, "FROM busybox\nCOPY data /data\nRUN rm /bin/vi && ln /data/file.txt /data/hard && mkfifo /data/fifo\n"
    )
    tool.build(ctx, "-t", "moving")
    return "moving"


def digests(tool: Tool, name: str) -> tuple[Any, Any]:
    doc = tool.inspect(name)
    return doc["Id"], [layer["digest"] for layer in doc["Manifest"]["Layers"]]  # type: ignore[index]


def test_round_trips_keep_every_digest(tool: Tool, image: str, tmp_path: Path) -> None:
    layout, archive = tmp_path / "layout", tmp_path / "image.tar"
    tool.run("export", image, "-o", str(layout))
    tool.run("export", image, "--format", "docker-archive", "-o", str(archive))
    for source in (str(layout), str(archive)):
        other = Tool(tmp_path / f"store-{len(source)}")
        other.run("import", source)
        assert digests(other, image) == digests(tool, image)  # id (config digest) and layer blobs
        assert other.inspect(image)["RootFS"] == tool.inspect(image)["RootFS"]


def test_real_clients_read_our_exports(tool: Tool, image: str, tmp_path: Path, mounted_image: Any) -> None:
    if shutil.which("skopeo") is None or shutil.which("umoci") is None:
        pytest.skip("skopeo and umoci (Debian packages) are needed to cross-check")
    layout, archive = tmp_path / "layout", tmp_path / "image.tar"
    tool.run("export", image, "-o", str(layout))
    tool.run("export", image, "--format", "docker-archive", "-o", str(archive))
    ours = tool.inspect(image)
    for ref in (f"oci:{layout}:moving:latest", f"docker-archive:{archive}"):
        seen = json.loads(
            subprocess.run(["skopeo", "inspect", "--raw", ref], capture_output=True, text=True, check=True).stdout
        )
        config = json.loads(
            subprocess.run(["skopeo", "inspect", "--config", ref], capture_output=True, text=True, check=True).stdout
        )
        assert config["rootfs"]["diff_ids"] == ours["RootFS"]["Layers"]  # type: ignore[index]
        assert len(seen["layers"]) == len(ours["RootFS"]["Layers"])  # type: ignore[index]
    # skopeo's own copy of our layout imports back with the same layers
    copied = tmp_path / "copied.tar"
    subprocess.run(
        ["skopeo", "copy", f"oci:{layout}:moving:latest", f"docker-archive:{copied}:moving:copy"],
        check=True,
        capture_output=True,
    )
    other = Tool(tmp_path / "store-copied")
    other.run("import", str(copied))
    assert other.inspect("moving:copy")["RootFS"] == ours["RootFS"]
    # umoci's unpack gives the same rootfs as our mount of the image
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:moving:latest", str(bundle)], check=True, capture_output=True
    )
    assert snapshot(bundle / "rootfs") == snapshot(mounted_image(image))


def test_bad_inputs_are_refused_and_leave_the_store_as_it_was(tool: Tool, image: str, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    tool.run("export", image, "-o", str(layout))
    target = Tool(tmp_path / "store-target")
    target.run("images")
    before = (
        sorted(p.name for p in (target.root / "blobs" / "sha256").iterdir()) if (target.root / "blobs").exists() else []
    )
    blob = max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    done = target.run("import", str(layout), check=False)
    assert done.returncode == 1 and "does not match its digest" in done.stderr and "Traceback" not in done.stderr
    # a docker-archive whose layer escapes its root
    evil = tmp_path / "evil.tar"
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        info = tarfile.TarInfo("../../escape")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    import hashlib

    diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}})
    with tarfile.open(evil, "w") as t:
        for name, payload in (
            ("l/layer.tar", layer.getvalue()),
            ("c.json", config.encode()),
            ("manifest.json", json.dumps([{"Config": "c.json", "Layers": ["l/layer.tar"]}]).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            t.addfile(info, io.BytesIO(payload))
    done = target.run("import", str(evil), check=False)
    assert done.returncode == 1 and "escape" in done.stderr and "nothing was imported" in done.stderr
    after = (
        sorted(p.name for p in (target.root / "blobs" / "sha256").iterdir()) if (target.root / "blobs").exists() else []
    )
    assert after == before and os.listdir(target.root / "layers") == [] and os.listdir(target.root / "tmp") == []
    assert not (tmp_path / "escape").exists() and not Path("/escape").exists()
