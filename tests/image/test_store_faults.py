"""The store under faults: a build or an import killed mid-way, a corrupt blob; `imagebuild check` finds all."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.image.conftest import Tool, dockerfile
from tests.support import is_mounted


def wait_for(predicate, timeout: float = 60) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_build_killed_mid_run_leaves_no_image_and_check_repairs(tool: Tool, ctx: Path) -> None:
    before = tool.run("images").stdout
    dockerfile(ctx, "FROM busybox\nRUN echo started && sleep 30\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagebuild", "--root", str(tool.root), "build", "-t", "killed", str(ctx)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if b"] started" in line:  # the command's own output, not the step header
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert tool.run("images").stdout == before  # no half image
    found = tool.run("check", check=False)
    assert found.returncode == 1 and "interrupted" in found.stdout
    assert "store repaired" in tool.run("check", "--repair").stdout
    assert tool.run("check").stdout.strip() == "store consistent"
    ours = f"/tmp/imagebuild-rootfs-{proc.pid}-"  # the killed build's mount points (other builds may run)
    with open("/proc/mounts") as f:
        assert not any(p.startswith(ours) and is_mounted(p) for p in (line.split()[1] for line in f))


@pytest.mark.usefixtures("tool")
def test_an_import_killed_mid_way_changes_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "big.tar"
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        for i in range(40):
            info = tarfile.TarInfo(f"data/{i}")
            payload = os.urandom(1 << 20)
            info.size = len(payload)
            t.addfile(info, io.BytesIO(payload))
    import hashlib

    diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}})
    with tarfile.open(archive, "w") as t:
        for name, payload in (
            ("l/layer.tar", layer.getvalue()),
            ("c.json", config.encode()),
            (
                "manifest.json",
                json.dumps([{"Config": "c.json", "Layers": ["l/layer.tar"], "RepoTags": ["big:1"]}]).encode(),
            ),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            t.addfile(info, io.BytesIO(payload))
    store = Tool(tmp_path / "store")
    store.run("images")
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagebuild", "--root", str(store.root), "import", str(archive)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_for(lambda: bool(os.listdir(store.root / "tmp")), timeout=60)  # it is under way
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "big" not in store.run("images").stdout and os.listdir(store.root / "layers") == []
    store.run("check", "--repair")
    assert store.run("check").stdout.strip() == "store consistent"
    store.run("import", str(archive))  # and it can be done again, whole
    assert "big" in store.run("images").stdout


def test_check_finds_a_corrupt_blob_and_repair_removes_what_needs_it(tool: Tool, ctx: Path, tmp_path: Path) -> None:
    dockerfile(ctx, "FROM busybox\nRUN echo x > /x\n")
    store = Tool(tmp_path / "own")
    layout = tmp_path / "layout"
    tool.run("export", "busybox", "-o", str(layout))
    store.run("import", str(layout), "-t", "busybox")
    store.build(ctx, "-t", "victim")
    layer = store.inspect("victim")["Manifest"]["Layers"][-1]["digest"]  # type: ignore[index]
    blob = store.root / "blobs" / "sha256" / layer[7:]
    os.chmod(blob, 0o644)
    blob.write_bytes(b"corrupted")
    found = store.run("check", check=False)
    assert found.returncode == 1 and f"blob {layer}" in found.stdout
    store.run("check", "--repair")
    assert "victim" not in store.run("images").stdout and "busybox" in store.run("images").stdout
    assert store.run("check").stdout.strip() == "store consistent"
