"""As root, every id of a container can use its filesystem, with ordinary permission checks, as under buildah and
podman: a RUN step that drops to another id (su, setpriv, apt's `_apt`, a package script) reads what it may read
and writes only where it may write, and what it creates is its own in the layer. No other user of the host can
reach a build's or a container's files."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.conftest import IMAGEBUILD, Tool, dockerfile
from tests.support import is_mounted, wait_until

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]

# a base with users, a root-owned 0644 file and a /tmp every id may write to
BASE = (
    "FROM busybox\n"
    "RUN mkdir -p /etc /home/app && mkdir -m 1777 /tmp"
    " && printf 'root:x:0:0::/root:/bin/sh\\nnobody:x:65534:65534::/:/bin/sh\\napp:x:1000:1000::/home/app:/bin/sh\\n'"
    " > /etc/passwd && printf 'root:x:0:\\nnogroup:x:65534:\\napp:x:1000:\\n' > /etc/group"
    " && echo root-only-writes > /etc/conf && chmod 0644 /etc/conf && chown 1000:1000 /home/app\n"
)

# what a dropped id tries: read the root-owned file, write it (must fail), make a file of its own
PROBE = (
    "id -u; cat /etc/conf;"
    " if echo changed >> /etc/conf; then echo WROTE-ROOT-FILE; fi;"
    " if touch /etc/new 2>/dev/null; then echo WROTE-ROOT-DIR; fi;"
    " touch /tmp/mine-$(id -u)"
)


@pytest.fixture(autouse=True)
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("root builds and runs: run as root")


def test_a_root_step_that_drops_to_another_id_uses_the_filesystem_with_ordinary_checks(tool: Tool, ctx: Path) -> None:
    dockerfile(
        ctx,
        BASE + f"RUN su nobody -s /bin/sh -c '{PROBE}'\n"
        f"USER 1000:1000\nRUN {PROBE}\n"
        'USER 0\nCMD ["sh", "-c", "stat -c %n=%u:%g /tmp/mine-*; cat /etc/conf"]\n',
    )
    built = tool.build(ctx, "-t", "dropped")
    out = built.stdout
    assert f"] {NOBODY}\n" in out and "] 1000\n" in out, out
    assert out.count("] root-only-writes") == 2, out  # both ids read the root-owned 0644 file
    assert "] WROTE-ROOT" not in out and out.count("Permission denied") >= 2, out  # neither may write it
    shown = tool.run("run", "--rm", "dropped").stdout.split()
    # what each id made is its own in the layers; the root file is unchanged
    assert shown == ["/tmp/mine-1000=1000:1000", f"/tmp/mine-{NOBODY}={NOBODY}:{NOBODY}", "root-only-writes"]


def rootfs_mounts() -> set[str]:
    with open("/proc/mounts", encoding="utf-8") as f:
        points = {line.split()[1] for line in f if line.split()[2] == "fuse.unionfs"}
    return {p for p in points if "imagebuild-rootfs-" in p}


@contextlib.contextmanager
def running(tool: Tool, *args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [*IMAGEBUILD, "--root", str(tool.root), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # imagebuild stops the command and unmounts
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_running_container_serves_its_ids_and_no_other_host_user(tool: Tool, ctx: Path) -> None:
    dockerfile(ctx, BASE)
    tool.build(ctx, "-t", "ids")
    before = rootfs_mounts()
    command = "su nobody -s /bin/sh -c 'cat /etc/conf' && echo READY && exec sleep 30"
    with running(tool, "run", "--rm", "ids", "sh", "-c", command) as proc:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip(), proc.stdout.readline().strip()]
        assert lines == ["root-only-writes", "READY"], lines  # uid 65534 inside reads the image
        assert wait_until(lambda: len(rootfs_mounts() - before) == 1, 10)
        (point,) = rootfs_mounts() - before
        assert "bin" in os.listdir(point)  # the container's rootfs, mounted there
        for path in (point, os.path.join(point, "etc", "conf"), os.path.dirname(point)):
            seen = subprocess.run([*AS_NOBODY, "ls", "-l", path], capture_output=True, text=True)
            assert seen.returncode != 0 and "Permission denied" in seen.stderr, (path, seen.stdout)
        read = subprocess.run([*AS_NOBODY, "cat", os.path.join(point, "etc", "conf")], capture_output=True)
        assert read.returncode != 0 and read.stdout == b""
    assert not is_mounted(point) and not os.path.exists(os.path.dirname(point))
