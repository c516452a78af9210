"""Lazy pulling through a real registry: `mount --lazy` and `run --lazy` of an image `push --estargz` made show
the tree umoci unpacks, fetch only the files read (counted from the registry's log), verify every chunk (a blob
corrupted on the registry's disk is EIO for the files it breaks and nothing else), retry dropped connections,
copy lazy files up, and leave nothing behind when killed."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagebuild.layer import estargz as esgz
from tests.image.conftest import Tool, dockerfile
from tests.image.test_owner import GONE_WITHIN, Janitor, gone, janitor, kill_mid_sleep, start  # noqa: F401
from tests.registry.conftest import Registry
from tests.support import is_mounted, snapshot, wait_until

BIG = 9 << 20  # three 4 MiB chunks


def blob_bytes(registry: Registry) -> int:
    """Bytes the registry sent for blob GETs (its access log's size field)."""
    total = 0
    for line in registry.log.read_text(errors="replace").splitlines():
        match = re.search(r'"GET /v2/[^ ]*/blobs/sha256:[0-9a-f]+ HTTP/[0-9.]+" 20[06] (\d+)', line)
        if match:
            total += int(match.group(1))
    return total


@pytest.fixture
def pushed(tool: Tool, registry: Registry, ctx: Path) -> str:
    """An image with a big incompressible file and small ones, pushed as eStargz; its reference."""
    (ctx / "big").write_bytes(os.urandom(BIG))
    (ctx / "small.txt").write_text("hello\n")
    (ctx / "other.txt").write_text("other\n")
    os.symlink("small.txt", ctx / "link")
    dockerfile(ctx, "FROM busybox\nCOPY . /data/\nRUN ln /data/small.txt /data/hard && mkdir /data/empty\n")
    tool.build(ctx, "-t", "lazy-src")
    ref = f"{registry.address}/lazy/app:1"
    tool.run("push", "lazy-src", ref, "--insecure", "--estargz")
    return ref


@pytest.fixture
def fresh(tmp_path: Path) -> Tool:
    """A store of its own: nothing of the image is in it."""
    return Tool(tmp_path / "fresh-store")


@pytest.fixture
def mounts(fresh: Tool) -> Iterator[list[Path]]:
    points: list[Path] = []
    yield points
    for point in points:
        if is_mounted(point):
            fresh.run("umount", str(point), check=False)
        if is_mounted(point):
            subprocess.run(["fusermount3", "-uz", str(point)], capture_output=True)


def lazy_mount(fresh: Tool, ref: str, point: Path, mounts: list[Path], *args: str) -> Path:
    mounts.append(point)
    fresh.run("mount", "--lazy", "--insecure", *args, ref, str(point))
    return point


def test_a_lazy_mount_fetches_only_what_is_read_and_shows_what_umoci_unpacks(
    fresh: Tool, registry: Registry, pushed: str, tmp_path: Path, mounts: list[Path]
) -> None:
    before = blob_bytes(registry)
    root = lazy_mount(fresh, pushed, tmp_path / "mnt", mounts, "--read-only")
    listed = blob_bytes(registry) - before
    assert listed < 64 << 10, f"mounting fetched {listed} bytes of blobs: only TOCs and the config should be"
    assert (root / "data" / "small.txt").read_text() == "hello\n"
    assert (root / "data" / "big").stat().st_size == BIG
    small = blob_bytes(registry) - before
    assert small < 256 << 10, f"reading one small file fetched {small} bytes"
    assert (root / "data" / "hard").stat().st_ino == (root / "data" / "small.txt").stat().st_ino

    # the whole tree, data included, is what umoci unpacks of the same image
    if shutil.which("skopeo") is None or shutil.which("umoci") is None:
        pytest.skip("skopeo and umoci (Debian packages) are needed to cross-check")
    layout = tmp_path / "layout"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{pushed}", f"oci:{layout}:app"],
        check=True,
        capture_output=True,
        timeout=180,
    )
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:app", str(bundle)], check=True, capture_output=True)
    assert snapshot(root) == snapshot(bundle / "rootfs")
    assert all(name in snapshot(root) for name in (esgz.TOC_NAME, esgz.NO_PREFETCH_LANDMARK))


def test_run_lazy_prints_a_file_and_a_second_run_reads_the_cache(fresh: Tool, registry: Registry, pushed: str) -> None:
    done = fresh.run("run", "--rm", "--lazy", "--insecure", pushed, "cat", "/data/small.txt")
    assert done.stdout == "hello\n"
    before = blob_bytes(registry)
    again = fresh.run("run", "--rm", "--lazy", "--insecure", pushed, "cat", "/data/small.txt", "/data/link")
    assert again.stdout == "hello\nhello\n"
    # the second run fetched no file data: the manifest, config and TOCs only
    assert blob_bytes(registry) - before < 64 << 10


def registry_blob(registry: Registry, digest: str) -> Path:
    hexdigest = digest.removeprefix("sha256:")
    return registry.log.parent / "data" / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def layer_with(fresh: Tool, ref: str, name: str) -> tuple[str, esgz.Toc]:
    """The digest and TOC (as the lazy store keeps it) of the layer that holds regular file `name`."""
    tocs = fresh.root / "lazy" / "tocs"
    manifest = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"], capture_output=True, check=True
        ).stdout
    )
    for layer in reversed(manifest["layers"]):
        raw = (tocs / (layer["digest"].removeprefix("sha256:") + ".json")).read_bytes()
        toc = esgz.Toc(0, "", json.loads(raw)["entries"], raw)
        if any(e["name"] == name and e["type"] == "reg" for e in toc.entries):
            return layer["digest"], toc
    raise AssertionError(f"no layer of {ref} holds {name}")


def test_a_blob_corrupted_on_the_registry_is_eio_for_its_file_and_the_others_read(
    fresh: Tool, registry: Registry, pushed: str, tmp_path: Path, mounts: list[Path]
) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo (Debian package) is needed to read the manifest")
    root = lazy_mount(fresh, pushed, tmp_path / "mnt", mounts, "--read-only")
    digest, toc = layer_with(fresh, pushed, "data/big")
    second = toc.chunks("data/big")[1]
    blob = registry_blob(registry, digest)
    with open(blob, "r+b") as f:  # a byte in the middle of big's second chunk
        f.seek(second.offset + 4096)
        byte = f.read(1)
        f.seek(second.offset + 4096)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(OSError) as caught:
        (root / "data" / "big").read_bytes()
    assert caught.value.errno == errno.EIO
    assert (root / "data" / "small.txt").read_text() == "hello\n"
    assert (root / "data" / "other.txt").read_text() == "other\n"
    log = (fresh.root / "lazy" / "log").read_text()
    assert log.count("/data/big") == 1 and "EIO" in log
    # a run says so on stderr, and the file is still EIO: nothing wrong was cached
    done = fresh.run("run", "--rm", "--lazy", "--insecure", pushed, "cat", "/data/big", check=False)
    assert done.returncode != 0 and "/data/big" in done.stderr and "answered EIO" in done.stderr


class DroppingProxy:
    """A TCP proxy to the registry that closes the first `drops` connections it accepts at once."""

    def __init__(self, target: str, drops: int) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.drops = drops
        self.dropped = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.dropped < self.drops:
                self.dropped += 1
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.server.close()


def test_dropped_connections_are_retried(
    fresh: Tool, registry: Registry, pushed: str, tmp_path: Path, mounts: list[Path]
) -> None:
    proxy = DroppingProxy(registry.address, drops=0)
    try:
        ref = pushed.replace(registry.address, proxy.address)
        root = lazy_mount(fresh, ref, tmp_path / "mnt", mounts, "--read-only")
        proxy.drops = proxy.dropped + 2  # the next two connections (the fetch of a file's data) are dropped
        assert (root / "data" / "other.txt").read_text() == "other\n"
        assert proxy.dropped >= 2
    finally:
        proxy.close()


def test_a_lazy_file_copies_up_whole(fresh: Tool, pushed: str, tmp_path: Path, mounts: list[Path]) -> None:
    root = lazy_mount(fresh, pushed, tmp_path / "mnt", mounts, "--name", "lazy-copyup")
    with open(root / "data" / "big", "r+b") as f:
        f.seek(BIG)
        f.write(b"tail")
    data = (root / "data" / "big").read_bytes()
    assert len(data) == BIG + 4 and data.endswith(b"tail") and data[:BIG].count(0) < BIG // 100
    upper = fresh.root / "containers" / "lazy-copyup" / "upper" / "data" / "big"
    assert upper.read_bytes() == data
    assert "user.unionfs.fetch" not in os.listxattr(upper)
    (root / "data" / "small.txt").write_text("changed\n")  # its hard link follows
    assert (root / "data" / "hard").read_text() == "changed\n"


def test_a_lazy_run_killed_outright_leaves_no_mount_and_no_daemon(
    fresh: Tool,
    pushed: str,
    janitor: Janitor,  # noqa: F811
) -> None:
    proc = start(fresh, janitor, "run", "--rm", "--lazy", "--insecure", pushed, "sleep", "60")
    point, daemon = kill_mid_sleep(fresh, janitor, proc)
    assert wait_until(lambda: gone(point, daemon), GONE_WITHIN, 0.05)
    assert str(fresh.root) not in Path("/proc/mounts").read_text()


def test_a_plain_gzip_image_is_pulled_whole_with_a_line_saying_so(
    tool: Tool, fresh: Tool, registry: Registry, ctx: Path
) -> None:
    (ctx / "file").write_text("plain\n")
    dockerfile(ctx, "FROM busybox\nCOPY file /file\n")
    tool.build(ctx, "-t", "lazy-plain")
    ref = f"{registry.address}/lazy/plain:1"
    tool.run("push", "lazy-plain", ref, "--insecure")
    done = fresh.run("run", "--rm", "--lazy", "--insecure", ref, "cat", "/file")
    assert done.stdout == "plain\n"
    layers = tool.inspect("lazy-plain")["RootFS"]["Layers"]  # type: ignore[index]
    assert done.stderr.count("is not eStargz: pulling it whole") == len(layers), done.stderr
    assert fresh.run("check").returncode == 0


def test_a_pull_after_a_lazy_mount_fetches_only_what_the_cache_lacks(
    fresh: Tool, registry: Registry, pushed: str, tmp_path: Path, mounts: list[Path]
) -> None:
    root = lazy_mount(fresh, pushed, tmp_path / "mnt", mounts, "--read-only")
    big = (root / "data" / "big").read_bytes()
    before = blob_bytes(registry)
    pulled = fresh.run("pull", "--insecure", pushed)
    fetched = blob_bytes(registry) - before
    assert fetched < 2 << 20, f"the pull fetched {fetched} bytes though {BIG} were in the cache"
    assert "Pulled" in pulled.stdout
    assert fresh.run("run", "--rm", pushed, "md5sum", "/data/big").stdout.split()[0] == hashlib.md5(big).hexdigest()
    assert fresh.run("check").returncode == 0
