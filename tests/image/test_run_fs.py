"""What RUN steps run on as root: the kernel's overlayfs where it mounts (`--run-fs auto`, the default), as buildah
does, else unionfs. Both give the same image; the kernel's mount is private to the step and goes with the build."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.conftest import IMAGEBUILD, Tool, dockerfile, static_busybox
from tests.image.test_owner import GONE_WITHIN, Janitor, cmdline, descendants, janitor, start, store_daemons  # noqa: F401
from tests.realworld.walk import entries
from tests.support import is_mounted, wait_until
from unionfs.api import exited

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="kernel overlayfs for RUN steps is for root builds")

ROOT_FS = "RUN grep ' / / ' /proc/self/mountinfo\n"  # the step's own view of its root's filesystem

# a lower tree removed and made again (opaque), a lower directory moved, a lower file removed, another owner,
# setuid, a hard link and a symlink, a USER step, and a root step that drops to another id itself
EDGES = """\
FROM busybox
RUN mkdir -p -m 1777 /tmp && mkdir -p /a/b/c /d && echo hi > /a/b/c/f && echo x > /d/y && ln /a/b/c/f /a/hl \\
 && ln -s b/c/f /a/sl && echo 'bob:x:1234:1234::/home/bob:/bin/sh' >> /etc/passwd && echo 'bob:x:1234:' >> /etc/group
RUN rm -rf /a/b && mv /d /e && rm /bin/ls && mkdir /a/b && echo new > /a/b/n && chown 1234:1234 /a/b/n \\
 && chmod 4755 /a/b/n
USER bob
RUN echo mine > /tmp/mine
USER 0
RUN busybox su -s /bin/sh bob -c 'echo dropped > /tmp/bob' && test "$(stat -c %u /tmp/bob)" = 1234
"""


def root_fs_type(built: subprocess.CompletedProcess[str]) -> str:
    """The filesystem type the RUN's mountinfo line gives its root (`... - TYPE SOURCE OPTIONS`)."""
    line = next(line for line in built.stdout.splitlines() if line.startswith("[") and " / / " in line)
    return line.split(" - ", 1)[1].split()[0]


def test_root_steps_run_on_kernel_overlay_by_default_and_unionfs_when_asked(tool: Tool, ctx: Path) -> None:
    dockerfile(ctx, "FROM busybox\n" + ROOT_FS)
    assert root_fs_type(tool.build(ctx, "--no-cache")) == "overlay"
    assert root_fs_type(tool.build(ctx, "--no-cache", "--run-fs", "unionfs")) == "fuse.unionfs"
    said = tool.run("build", "--no-cache", str(ctx), env={"IMAGEBUILD_RUN_FS": "unionfs"})
    assert root_fs_type(said) == "fuse.unionfs"


def test_kernel_and_unionfs_steps_give_the_same_image(tool: Tool, ctx: Path, tmp_path: Path) -> None:
    dockerfile(ctx, EDGES)
    trees = {}
    for run_fs in ("overlay", "unionfs"):
        tool.build(ctx, "--no-cache", "--run-fs", run_fs, "-t", f"edges-{run_fs}")
        point = tmp_path / run_fs
        point.mkdir()
        tool.run("mount", "--read-only", f"edges-{run_fs}", str(point))
        try:
            trees[run_fs] = entries(str(point))
        finally:
            tool.run("umount", str(point))
    assert trees["overlay"] == trees["unionfs"]
    tree = trees["overlay"]
    assert "/a/b/c/f" not in tree and "/d/y" not in tree and "/e/y" in tree and "/bin/ls" not in tree
    assert tree["/tmp/bob"].uid == 1234 and tree["/tmp/mine"].uid == 1234 and tree["/a/b/n"].mode & 0o7777 == 0o4755
    # what the kernel keeps for itself (origin, impure) is not in the layers it made
    for layer in (tool.root / "layers").iterdir():
        for top, dirs, files in os.walk(layer):
            for name in (".", *dirs, *files):
                path = os.path.join(top, name)
                kept = [a for a in os.listxattr(path, follow_symlinks=False) if a.startswith("trusted.overlay.")]
                assert kept in ([], ["trusted.overlay.opaque"]), f"{path}: {kept}"


def rootfs_points(text: str, maker: int) -> set[str]:
    return set(re.findall(rf"\S*/imagebuild-rootfs-{maker}-\w+/rootfs", text))


def mounts_of(maker: int) -> dict[int, set[str]]:
    """The rootfs mounts of the imagebuild process `maker`, by the pid of each process that sees one."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/mountinfo", encoding="utf-8") as f:
                points = rootfs_points(f.read(), maker)
                if points:
                    found[int(entry)] = points
    return found


def test_a_kernel_steps_rootfs_is_private_and_goes_with_a_killed_build(tool: Tool, ctx: Path) -> None:
    dockerfile(ctx, "FROM busybox\nRUN echo secret > /private && sleep 60\n")
    build = subprocess.Popen(
        [*IMAGEBUILD, "--root", str(tool.root), "build", "--no-cache", "-t", "killed", str(ctx)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kids: list[int] = []
    try:

        def sleeping() -> bool:
            kids[:] = descendants(build.pid)
            return any(os.path.basename((cmdline(kid) or [""])[0]) == "sleep" for kid in kids)

        assert wait_until(sleeping, 120, 0.05), "the RUN never started"
        seen = mounts_of(build.pid)
        assert seen, "the step's rootfs is mounted nowhere"
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            assert not rootfs_points(f.read(), build.pid)  # not in the host's mount namespace
        holder = min(seen)
        (point,) = seen[holder]
        assert os.listdir(point) == []  # the host's directory: empty
        inside = f"/proc/{holder}/root{point}/private"
        assert Path(inside).read_text() == "secret\n"
        other = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", inside], capture_output=True
        )
        assert other.returncode != 0 and other.stdout == b""  # another user of the host cannot read it
    finally:
        build.send_signal(signal.SIGKILL)
        build.wait()
    assert wait_until(lambda: not mounts_of(build.pid), 10, 0.05), f"left mounted: {mounts_of(build.pid)}"
    assert wait_until(lambda: all(not os.path.exists(f"/proc/{kid}") for kid in kids), 10, 0.05)
    assert "killed" not in tool.run("images").stdout
    found = tool.run("check", check=False)
    assert found.returncode == 1 and f"imagebuild-run-{build.pid}-" in found.stdout  # the name files' copies
    tool.run("check", "--repair")
    assert tool.run("check").stdout.strip() == "store consistent"


@pytest.fixture
def store_on_overlay(tmp_path: Path) -> Iterator[Tool]:
    """A store on a kernel overlay mount, which overlayfs refuses as an upper: with the busybox image."""
    point = tmp_path / "merged"
    for name in ("lower", "upper", "work", "merged"):
        (tmp_path / name).mkdir()
    options = f"lowerdir={tmp_path / 'lower'},upperdir={tmp_path / 'upper'},workdir={tmp_path / 'work'}"
    done = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"kernel overlayfs cannot be mounted here: {done.stderr.decode().strip()}")
    try:
        store = Tool(point / "store")
        base = point / "busybox"
        base.mkdir()
        shutil.copy(Path(__file__).resolve().parents[2] / "examples" / "busybox" / "Dockerfile", base)
        shutil.copy(str(static_busybox()), base / "busybox")
        store.build(base, "-t", "busybox")
        yield store
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_where_overlayfs_refuses_the_store_a_build_says_so_once_and_uses_unionfs(
    store_on_overlay: Tool, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    dockerfile(ctx, "FROM busybox\nRUN echo one > /one\n" + ROOT_FS)
    built = store_on_overlay.build(ctx, "--no-cache", "-t", "fallback")
    notes = [line for line in built.stdout.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "RUN steps use unionfs: kernel overlayfs refused the mount" in notes[0], built.stdout
    assert "the store is on overlay" in notes[0]
    assert root_fs_type(built) == "fuse.unionfs"
    refused = store_on_overlay.build(ctx, "--no-cache", "--run-fs", "overlay", check=False)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1, refused.stderr
    assert "kernel overlayfs refused the RUN's mount" in lines[0] and lines[0].endswith("use --run-fs unionfs")
    assert store_on_overlay.run("check").stdout.strip() == "store consistent"


def test_a_wrong_run_fs_is_one_line(tool: Tool, ctx: Path) -> None:
    dockerfile(ctx, "FROM busybox\nRUN true\n")
    flag = tool.build(ctx, "--run-fs", "vfs", check=False)
    assert flag.returncode == 2 and "invalid choice: 'vfs'" in flag.stderr and len(flag.stderr.splitlines()) == 1
    env = tool.run("build", str(ctx), check=False, env={"IMAGEBUILD_RUN_FS": "vfs"})
    assert env.returncode == 1
    assert env.stderr.strip() == "imagebuild: error: IMAGEBUILD_RUN_FS=vfs: use one of auto, overlay, unionfs"


def test_a_kernel_step_that_makes_a_whiteout_name_fails_in_one_line(tool: Tool, ctx: Path) -> None:
    dockerfile(ctx, "FROM busybox\nRUN mkdir -p /srv && touch /srv/.wh.notes\n")
    failed = tool.build(ctx, "--no-cache", "--run-fs", "overlay", "-t", "whiteout-name", check=False)
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 1 and len(lines) == 1, failed.stderr
    assert "RUN made '/srv/.wh.notes', a name layers keep for whiteouts" in lines[0]
    assert "whiteout-name" not in tool.run("images").stdout


def test_a_unionfs_mount_unmounted_while_a_kernel_step_runs_goes_at_once(
    tool: Tool,
    janitor: Janitor,  # noqa: F811
    ctx: Path,
    tmp_path: Path,
) -> None:
    """The step's namespace copies the host's mounts; it must not keep another mount's daemon alive (this
    machine's `/` may not propagate unmounts)."""
    point = tmp_path / "mnt"
    janitor.mount(str(point), None)
    tool.run("mount", "--read-only", "busybox", str(point))
    (daemon,) = [pid for p, pid in store_daemons(tool.root).items() if p == str(point)]
    janitor.mount(str(point), daemon)
    dockerfile(ctx, "FROM busybox\nRUN sleep 60\n")
    build = start(tool, janitor, "build", "--no-cache", "--run-fs", "overlay", str(ctx))
    try:
        sleeping = lambda: any(cmdline(k)[:1] == ["sleep"] for k in descendants(build.pid))  # noqa: E731
        assert wait_until(sleeping, 120, 0.05), "the RUN never started"
        tool.run("umount", str(point))
        assert wait_until(lambda: exited(daemon), GONE_WITHIN, 0.05), "the daemon waited for the RUN"
        assert not is_mounted(point) and build.poll() is None  # and the step still runs
    finally:
        build.send_signal(signal.SIGKILL)
        build.wait()


@pytest.mark.parametrize("run_fs", ["overlay", "unionfs"])
def test_what_a_step_leaves_running_ends_with_it(tool: Tool, ctx: Path, run_fs: str) -> None:
    """As in docker: a step's own pid namespace, so nothing it started writes to its upper once that is a layer
    (and nothing keeps a kernel overlay mounted)."""
    marker = f"{os.getpid() % 1000 + 7000}"
    dockerfile(ctx, f"FROM busybox\nRUN (busybox setsid busybox sleep {marker} >/dev/null 2>&1 &); echo started\n")
    tool.build(ctx, "--no-cache", "--run-fs", run_fs)

    def left() -> list[int]:
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and cmdline(int(p))[-2:] == ["sleep", marker]]

    try:
        assert wait_until(lambda: not left(), 5, 0.05), f"still running: {left()}"
    finally:
        for pid in left():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
