"""The protocol corners: cross-repository mounts, indexes, the Bearer token challenge, retries on 5xx."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import platform
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagebuild.oci import Descriptor, Index, Platform, mediatypes
from imagebuild.transport.registry import Client
from tests.image.conftest import Tool
from tests.registry.conftest import Registry


def test_cross_repository_mount(tool: Tool, registry: Registry) -> None:
    tool.run("push", "busybox", f"{registry.address}/team-a/busybox:1", "--insecure")
    uploads = registry.uploads()
    pushed = tool.run(
        "push", "busybox", f"{registry.address}/team-b/busybox:1", "--insecure", "--mount-from", "team-a/busybox"
    )
    assert "0 blob(s) sent" in pushed.stdout and registry.uploads() == uploads
    assert "mount=sha256" in registry.log.read_text()


def test_an_index_resolves_to_this_platform(tool: Tool, registry: Registry, tmp_path: Path) -> None:
    ref = f"{registry.address}/multi/busybox"
    ctx = tmp_path / "other-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /other-platform\n")
    tool.build(ctx, "-t", "other-platform")
    tool.run("push", "busybox", f"{ref}:mine", "--insecure")
    tool.run("push", "other-platform", f"{ref}:theirs", "--insecure")
    client = Client(registry.address, insecure=True)
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    other = "arm64" if machine != "arm64" else "amd64"
    entries = []
    for tag, arch in (("theirs", other), ("mine", machine)):  # this platform's entry second: no first-match luck
        media_type, manifest, digest = client.get_manifest("multi/busybox", tag)
        entries.append(
            Descriptor(
                media_type=media_type,
                digest=digest,
                size=len(manifest),
                platform=Platform(os="linux", architecture=arch),
            )
        )
    index = Index(manifests=entries, media_type=mediatypes.OCI_INDEX)
    client.put_manifest("multi/busybox", "multi", index.to_json(), mediatypes.OCI_INDEX)
    fresh = Tool(tmp_path / "fresh")
    fresh.run("pull", f"{ref}:multi", "--insecure")
    assert fresh.inspect(f"{ref}:multi")["Id"] == tool.inspect("busybox")["Id"]


class TokenRegistry(http.server.BaseHTTPRequestHandler):
    """A read-only registry serving an OCI layout behind a Bearer challenge, failing its first request (503)."""

    layout: Path
    failures_left = 1
    seen_tokens: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            self._send(503, b'{"errors":[{"code":"UNAVAILABLE","message":"try again"}]}')
            return
        host = self.headers["Host"]
        if self.path.startswith("/token"):
            expected = "Basic " + base64.b64encode(b"bob:pw").decode()
            if self.headers.get("Authorization") != expected or "scope=repository" not in self.path:
                self._send(401)
                return
            self._send(200, json.dumps({"token": "good-token"}).encode())
            return
        if self.headers.get("Authorization") != "Bearer good-token":
            challenge = f'Bearer realm="http://{host}/token",service="test",scope="repository:img:pull"'
            self._send(401, b"", {"WWW-Authenticate": challenge})
            return
        type(self).seen_tokens.append(self.headers["Authorization"])
        index = json.loads((self.layout / "index.json").read_text())
        if self.path.startswith("/v2/img/manifests/"):
            entry = index["manifests"][0]
            body = (self.layout / "blobs" / "sha256" / entry["digest"][7:]).read_bytes()
            self._send(200, body, {"Content-Type": entry["mediaType"]})
        elif self.path.startswith("/v2/img/blobs/sha256:"):
            digest = self.path.rsplit(":", 1)[1]
            body = (self.layout / "blobs" / "sha256" / digest).read_bytes()
            assert hashlib.sha256(body).hexdigest() == digest
            self._send(200, body)
        else:
            self._send(404)


@pytest.fixture
def token_registry(tool: Tool, tmp_path: Path) -> Iterator[str]:
    layout = tmp_path / "layout"
    tool.run("export", "busybox", "-o", str(layout))
    TokenRegistry.layout = layout
    TokenRegistry.failures_left = 1
    TokenRegistry.seen_tokens = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TokenRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_bearer_token_flow_and_a_retry_after_503(tool: Tool, token_registry: str, tmp_path: Path) -> None:
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text(
        json.dumps({"auths": {token_registry: {"auth": base64.b64encode(b"bob:pw").decode()}}})
    )
    fresh = Tool(tmp_path / "fresh")
    fresh.run("pull", f"{token_registry}/img:latest", "--insecure", env={"DOCKER_CONFIG": str(config)})
    assert fresh.inspect(f"{token_registry}/img:latest")["Id"] == tool.inspect("busybox")["Id"]
    assert TokenRegistry.failures_left == 0 and TokenRegistry.seen_tokens  # retried, then authenticated
    anonymous = Tool(tmp_path / "anon").run(
        "pull", f"{token_registry}/img:latest", "--insecure", check=False, env={"DOCKER_CONFIG": str(tmp_path / "none")}
    )
    assert anonymous.returncode == 1 and "token service refused" in anonymous.stderr
