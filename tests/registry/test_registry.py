"""Push and pull through a real registry on 127.0.0.1, cross-checked with skopeo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.image.conftest import Tool, dockerfile
from tests.registry.conftest import Registry


def test_push_pull_keeps_every_digest_and_a_second_push_sends_no_blob(
    tool: Tool, registry: Registry, tmp_path: Path
) -> None:
    ref = f"{registry.address}/demo/busybox:1"
    first = tool.run("push", "busybox", ref, "--insecure")
    blobs = len(tool.inspect("busybox")["RootFS"]["Layers"]) + 1  # type: ignore[arg-type]
    assert f"{blobs} blob(s) sent" in first.stdout and registry.uploads() == blobs
    again = tool.run("push", "busybox", ref, "--insecure")
    assert "0 blob(s) sent" in again.stdout and registry.uploads() == blobs  # counted by the registry itself
    empty = Tool(tmp_path / "empty-store")
    empty.run("pull", ref, "--insecure")
    assert empty.inspect(ref)["Id"] == tool.inspect("busybox")["Id"]
    assert empty.inspect(ref)["Manifest"] == tool.inspect("busybox")["Manifest"]  # same layer blobs


def test_skopeo_pushes_our_layout_and_we_pull_and_run_it(tool: Tool, registry: Registry, tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is needed")
    layout = tmp_path / "layout"
    tool.run("export", "busybox", "-o", str(layout))
    ref = f"{registry.address}/bb/copied:v1"
    subprocess.run(
        ["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:busybox:latest", f"docker://{ref}"],
        check=True,
        capture_output=True,
    )
    seen = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"], check=True, capture_output=True, text=True
        ).stdout
    )
    other = Tool(tmp_path / "other")
    other.run("pull", ref, "--insecure")
    assert len(other.inspect(ref)["RootFS"]["Layers"]) == len(seen["Layers"])  # type: ignore[arg-type]
    assert other.run("run", "--rm", ref, "echo", "pulled and running").stdout.strip() == "pulled and running"


def test_from_a_registry_reference(tool: Tool, registry: Registry, ctx: Path, tmp_path: Path) -> None:
    ref = f"{registry.address}/base/busybox:1"
    tool.run("push", "busybox", ref, "--insecure")
    dockerfile(ctx, f"FROM {ref}\nRUN echo built > /on-top\n")
    fresh = Tool(tmp_path / "fresh")
    built = fresh.build(ctx, "-t", "ontop", "--insecure")
    assert "pulling" in built.stdout
    layers = fresh.inspect("ontop")["RootFS"]["Layers"]  # type: ignore[index]
    assert layers[:-1] == tool.inspect("busybox")["RootFS"]["Layers"]  # type: ignore[index]


def test_auth_login_and_clear_errors(tool: Tool, auth_registry: Registry, tmp_path: Path) -> None:
    env = {"DOCKER_CONFIG": str(tmp_path / "docker-config")}
    ref = f"{auth_registry.address}/private/busybox:1"
    denied = tool.run("push", "busybox", ref, "--insecure", check=False, env=env)
    assert denied.returncode == 1 and "needs a login" in denied.stderr and "Traceback" not in denied.stderr
    login = [*tool_command(tool), "login", auth_registry.address, "-u", "alice", "--password-stdin", "--insecure"]
    wrong = subprocess.run(login, input="nope\n", capture_output=True, text=True, env={**os.environ, **env})
    assert wrong.returncode == 1 and "refused the credentials of 'alice'" in wrong.stderr
    right = subprocess.run(login, input="s3cret\n", capture_output=True, text=True, env={**os.environ, **env})
    assert right.returncode == 0, right.stderr
    assert json.loads((tmp_path / "docker-config" / "config.json").read_text())["auths"][auth_registry.address]
    tool.run("push", "busybox", ref, "--insecure", env=env)
    other = Tool(tmp_path / "other")
    other.run("pull", ref, "--insecure", env=env)
    assert other.inspect(ref)["Id"] == tool.inspect("busybox")["Id"]


def tool_command(tool: Tool) -> list[str]:
    import sys

    return [sys.executable, "-m", "imagebuild", "--root", str(tool.root)]


def test_chunked_uploads(tool: Tool, registry: Registry) -> None:
    ref = f"{registry.address}/chunked/busybox:1"
    tool.run("push", "busybox", ref, "--insecure", env={"IMAGEBUILD_UPLOAD_CHUNK": "200000"})
    assert (
        sum('"PATCH /v2/chunked/busybox/blobs/uploads/' in line for line in registry.log.read_text().splitlines()) > 2
    )
    assert "0 blob(s) sent" in tool.run("push", "busybox", ref, "--insecure").stdout


def test_a_corrupt_blob_on_the_registry_is_refused_and_nothing_is_imported(
    tool: Tool, registry: Registry, tmp_path: Path
) -> None:
    ref = f"{registry.address}/corrupt/busybox:1"
    tool.run("push", "busybox", ref, "--insecure")
    biggest = max((tmp_path / "reg-open" / "data").rglob("data"), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[100] ^= 0xFF
    biggest.write_bytes(bytes(data))
    other = Tool(tmp_path / "other")
    failed = other.run("pull", ref, "--insecure", check=False)
    assert failed.returncode == 1 and "does not match its digest" in failed.stderr
    assert os.listdir(other.root / "layers") == [] and "corrupt" not in other.run("images").stdout
