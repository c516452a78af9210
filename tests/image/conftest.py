"""Image tests: real builds over a busybox base made from Debian's busybox-static (no downloads)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import fuse_usable, is_mounted

IMAGEBUILD = [sys.executable, "-m", "imagebuild"]


@dataclass
class Tool:
    root: Path

    def run(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*IMAGEBUILD, "--root", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **(env or {})},
        )
        if check and done.returncode != 0:
            raise AssertionError(f"imagebuild {args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def build(self, context: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("build", *args, str(context), check=check)

    def inspect(self, image: str) -> dict[str, object]:
        doc: list[dict[str, object]] = json.loads(self.run("inspect", image).stdout)
        return doc[0]

    def image_id(self, built: subprocess.CompletedProcess[str]) -> str:
        return next(line.split()[-1] for line in built.stdout.splitlines() if line.startswith("Successfully built"))


def static_busybox() -> str | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="session")
def tool(tmp_path_factory: pytest.TempPathFactory) -> Tool:
    reason = fuse_usable()
    if reason is not None:
        pytest.skip(f"FUSE mounts cannot be made here: {reason}")
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    busybox = static_busybox()
    if busybox is None:
        pytest.skip("busybox-static is not installed")
    base = tmp_path_factory.mktemp("image")
    t = Tool(base / "store")
    ctx = base / "busybox"
    ctx.mkdir()
    shutil.copy(Path(__file__).resolve().parents[2] / "examples" / "busybox" / "Dockerfile", ctx / "Dockerfile")
    shutil.copy(busybox, ctx / "busybox")
    t.build(ctx, "-t", "busybox", "-t", "busybox:1.35")
    return t


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    path = tmp_path / "ctx"
    path.mkdir()
    return path


def dockerfile(ctx: Path, text: str) -> Path:
    (ctx / "Dockerfile").write_text(text)
    return ctx


@pytest.fixture
def mounted_image(tool: Tool, tmp_path: Path) -> Iterator[object]:
    mounts: list[Path] = []

    def mount(image: str) -> Path:
        point = tmp_path / f"mnt{len(mounts)}"
        point.mkdir()
        tool.run("mount", "--read-only", image, str(point))
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        if is_mounted(point):
            tool.run("umount", str(point), check=False)
        if is_mounted(point):
            subprocess.run(["fusermount3", "-uz", str(point)], capture_output=True)
