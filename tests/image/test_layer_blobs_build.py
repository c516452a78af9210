"""Builds whose layer compression is off the critical path: the same image ids, layer digests and manifests as
when every layer was compressed as it was made; an earlier stage's layers compressed only when an image holds
them; a build killed before its commit leaves a store `check` finds sound, and what it cached is used later."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from tests.image.conftest import Tool, dockerfile

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}
MULTISTAGE = "FROM scratch AS build\nCOPY a /a\nCOPY b /b\nFROM scratch\nCOPY --from=build /a /x\nCOPY c /c\n"
# What this build gave when each layer was gzipped as it was captured (the store before compression moved off the
# build): image id -> manifest digest.
FINAL = (
    "sha256:caa5f872b4cc01576f438f067a7b889a00cd36333f1687685f6f9f429900ded1",
    "sha256:b9286da1610f2475d5160529a1f101ff90c2def22ea065c178bfe407e00dda5a",
)
FIRST_STAGE = (
    "sha256:37255a2adeeb56382da7d6db0ed631b1444853b5ea9d79a3af4f3b8121be2da0",
    "sha256:6da9294c12b0caaeb7236a833875787d0cc3e99b74166b668f400784d90bb4f0",
)


def multistage(ctx: Path) -> Path:
    rng = random.Random(5)
    (ctx / "a").write_bytes(bytes(rng.getrandbits(8) for _ in range(100000)) * 30)
    (ctx / "b").write_text("b\n" * 1000)
    (ctx / "c").write_text("hello\n")
    dockerfile(ctx, MULTISTAGE)
    for name in ("a", "b", "c", "Dockerfile"):
        os.chmod(ctx / name, 0o644)
    os.chmod(ctx, 0o755)
    return ctx


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file of a store with its inode and mtime: what a write would change."""
    found = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            found[os.path.join(dirpath, name)] = (st.st_ino, st.st_mtime_ns)
    return found


def store_problems(tool: Tool) -> list[str]:
    """What `imagebuild check` finds wrong with this store. Other sessions' builds on the machine (their rootfs
    mount points and RUN files, which check lists for whichever store) are not this test's."""
    shared = ("/tmp/imagebuild-rootfs-", "/dev/shm/imagebuild-run-")
    lines = tool.run("check", check=False).stdout.splitlines()
    return [x for x in lines if x.strip() and x.strip() != "store consistent" and not any(p in x for p in shared)]


def images(tool: Tool) -> dict[str, str]:
    found: dict[str, str] = json.loads((tool.root / "images.json").read_text())["images"]
    return found


def test_the_same_build_gives_the_same_ids_and_an_unused_stage_is_never_compressed(ctx: Path, tmp_path: Path) -> None:
    tool = Tool(tmp_path / "store")
    multistage(ctx)
    built = tool.image_id(tool.run("build", "-t", "final", str(ctx), env=EPOCH))
    assert (built, images(tool)[built]) == FINAL
    blobs = sorted(os.listdir(tool.root / "blobs" / "sha256"))
    assert len(blobs) == 4  # the final image's two layers, its config, its manifest: not the build stage's layers
    before = snapshot(tool.root)
    again = tool.image_id(tool.run("build", "-t", "final", str(ctx), env=EPOCH))  # a no-op rebuild
    assert again == built and sorted(os.listdir(tool.root / "blobs" / "sha256")) == blobs
    assert snapshot(tool.root) == before  # it wrote nothing (no fsync to wait for on a busy disk)
    first = tool.image_id(tool.run("build", "--target", "build", str(ctx), env=EPOCH))  # cached, compressed now
    assert (first, images(tool)[first]) == FIRST_STAGE
    assert store_problems(tool) == []


def test_a_build_killed_before_its_commit_leaves_cache_that_later_builds_use(tool: Tool, ctx: Path) -> None:
    (ctx / "big").write_bytes(os.urandom(8 << 20))
    text = "FROM busybox AS build\nCOPY big /big\nFROM busybox\nCOPY --from=build /big /copy\nRUN {}\n"
    dockerfile(ctx, text.format("echo started && sleep 30"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagebuild", "--root", str(tool.root), "build", str(ctx)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if b"] started" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    tool.run("check", "--repair", check=False)  # the killed RUN's scratch dirs
    assert store_problems(tool) == []
    dockerfile(ctx, text.format("echo finished > /done"))
    built = tool.build(ctx, "-t", "after-kill").stdout
    assert built.count("Using cache") == 2, built  # both COPY steps, whose blobs were never made or were cut short
    assert store_problems(tool) == []
    exported = tool.root.parent / "after-kill.tar"
    tool.run("export", "after-kill", "--format", "docker-archive", "-o", str(exported))
    assert exported.stat().st_size > 8 << 20
