"""A real registry (Debian's docker-registry) on 127.0.0.1 only, started per test and always stopped."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Registry:
    address: str
    log: Path

    def uploads(self) -> int:
        """Blob uploads the registry completed (counted from its own log)."""
        return sum(1 for line in self.log.read_text().splitlines() if '"PUT /v2/' in line and "/blobs/uploads/" in line)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(tmp: Path, htpasswd: Path | None = None) -> tuple[subprocess.Popen[bytes], Registry]:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry (Debian package) is not installed")
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "registry.yml"
    auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n" if htpasswd else ""
    config.write_text(
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    log = tmp / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except urllib.error.HTTPError:
            break  # 401: up, and asking for credentials
        except OSError:
            time.sleep(0.1)
    return proc, Registry(f"127.0.0.1:{port}", log)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    proc, reg = start(tmp_path / "reg-open")
    try:
        yield reg
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[Registry]:
    if shutil.which("htpasswd") is None:
        pytest.skip("htpasswd (apache2-utils) is needed for a registry with auth")
    (tmp_path / "reg-auth").mkdir()
    htpasswd = tmp_path / "reg-auth" / "htpasswd"
    htpasswd.write_text(
        subprocess.run(["htpasswd", "-Bbn", "alice", "s3cret"], capture_output=True, text=True, check=True).stdout
    )
    proc, reg = start(tmp_path / "reg-auth", htpasswd)
    try:
        yield reg
    finally:
        proc.terminate()
        proc.wait(timeout=20)


from tests.image.conftest import ctx, mounted_image, tool  # noqa: E402, F401  (the image tests' fixtures)
