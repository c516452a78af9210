"""File capabilities without root: an ordinary user may not set `security.capability`, yet its builds, imports
and mounts keep one as a record (`user.containers.override_security.capability`, unionfs.privxattr) and its
layer tars carry it as root's would: a v2 PAX record.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.test_xattrs import (
    CAPABILITY,
    V2_NET_RAW,
    capability_archive,
    copy_tools,
    host_program,
    layout_layers,
    pax_xattrs,
)
from tests.rootless.conftest import User

RECORD = "user.containers.override_security.capability"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Store:
    """imagebuild as the user, with its own store in the workspace; mounts it makes are undone at the end."""

    def __init__(self, user: User, workspace: Path) -> None:
        self.user = user
        self.workspace = workspace
        self.root, self.out = workspace / "store", workspace / "out"
        for path in (self.root, self.out):
            path.mkdir()
            os.chown(path, user.uid, user.gid)
        self.mounts: list[Path] = []

    def run(self, *args: str) -> str:
        done = self.user.run(
            self.user.python, "-m", "imagebuild", "--root", str(self.root), *args, check=False, timeout=300
        )
        if done.returncode != 0:
            raise AssertionError(f"imagebuild {args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def mount(self, image: str) -> Path:
        point = self.workspace / f"mnt{len(self.mounts)}"
        point.mkdir()
        os.chown(point, self.user.uid, self.user.gid)
        self.mounts.append(point)
        self.run("mount", "--read-only", image, str(point))
        return point

    def shown_capability(self, path: Path) -> bytes:
        """security.capability of `path` as the user sees it (only the user may enter its own mount)."""
        done = self.user.run("getfattr", "--absolute-names", "-e", "hex", "-n", CAPABILITY, str(path), check=False)
        found = [line for line in done.stdout.splitlines() if line.startswith(CAPABILITY + "=0x")]
        return bytes.fromhex(found[0].partition("=0x")[2]) if found else b""

    def export(self, image: str) -> Path:
        layout = self.out / f"layout-{image}"
        self.run("export", image, "-o", str(layout))
        return layout

    def close(self) -> None:
        for point in self.mounts:
            self.user.run(
                self.user.python, "-m", "imagebuild", "--root", str(self.root), "umount", str(point), check=False
            )


@pytest.fixture
def store(user: User, workspace: Path) -> Iterator[Store]:
    if shutil.which("bwrap") is None or shutil.which("getfattr") is None:
        pytest.skip("needs bubblewrap and getfattr (Debian's bubblewrap and attr)")
    made = Store(user, workspace)
    try:
        yield made
    finally:
        made.close()  # (the workspace fixture detaches whatever is left)


def readable(path: Path) -> Path:
    subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)
    return path


def base_image(store: Store) -> None:
    ctx = store.workspace / "busybox"
    ctx.mkdir()
    shutil.copy(EXAMPLES / "busybox" / "Dockerfile", ctx / "Dockerfile")
    shutil.copy(host_program("busybox"), ctx / "busybox")
    store.run("build", "-t", "busybox", str(readable(ctx)))


def test_setcap_in_a_rootless_run_reaches_the_layer_tar_as_v2(store: Store) -> None:
    base_image(store)
    ctx = store.workspace / "capped"
    ctx.mkdir()
    copy_tools(ctx, "setcap")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        "COPY tools/ /\n"
        "RUN mkdir -p /usr/bin && cp /bin/busybox /usr/bin/ping"
        " && /usr/sbin/setcap cap_net_raw+ep /usr/bin/ping && chmod u-s /usr/bin/ping\n"
        "RUN chmod 0755 /usr/bin/ping\n"
    )
    # setcap runs in the sandbox's user namespace: the kernel hands the mount a v3 for the user's uid
    store.run("build", "-t", "capped", str(readable(ctx)))
    *_, set_here, chmod_here = layout_layers(store.export("capped"))
    for layer in (set_here, chmod_here):
        assert pax_xattrs(layer["usr/bin/ping"]) == {CAPABILITY: V2_NET_RAW}
    assert store.shown_capability(store.mount("capped") / "usr" / "bin" / "ping") == V2_NET_RAW


def test_a_rootless_import_keeps_the_capability_as_a_record(store: Store) -> None:
    archive = capability_archive(store.workspace / "image.tar")
    os.chmod(archive, 0o644)
    store.run("import", str(archive))
    kept = [path for path in (store.root / "layers").glob("*/usr/bin/ping")]
    assert len(kept) == 1 and os.getxattr(kept[0], RECORD, follow_symlinks=False) == V2_NET_RAW
    assert store.shown_capability(store.mount("imported") / "usr" / "bin" / "ping") == V2_NET_RAW
    ctx = store.workspace / "child"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM imported\nRUN chmod u-s /usr/bin/ping\n")
    store.run("build", "-t", "child", str(readable(ctx)))
    top = layout_layers(store.export("child"))[-1]
    assert pax_xattrs(top["usr/bin/ping"]) == {CAPABILITY: V2_NET_RAW, "user.origin": b"deb"}
