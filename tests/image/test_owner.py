"""Nothing outlives its owner: a build or run killed outright (SIGKILL, as the OOM killer does) takes its mounts
and daemons with it; `imagebuild mount` outlives its command until `imagebuild umount`; `imagebuild check` names
what older versions left behind and `--repair` clears it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagebuild.sandbox import PRIVATE_PREFIX, private_base
from tests.image.conftest import IMAGEBUILD, Tool, dockerfile
from tests.support import UNIONFS, is_mounted, wait_until
from unionfs.api import exited

GONE_WITHIN = 10.0  # seconds; the daemons unmount at once and exit in about two
ROOTFS_PREFIX = "imagebuild-rootfs-"


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [os.fsdecode(a) for a in f.read().split(b"\0")[:-1]]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError), open(f"/proc/{entry}/stat", "rb") as f:
                parents[int(entry)] = int(f.read().rpartition(b")")[2].split()[1])
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        todo += children
    return found


def store_daemons(root: Path) -> dict[str, int]:
    """The unionfs daemons serving a layer of the store at `root`: mount point -> pid (read from command lines,
    as any version of imagebuild starts them)."""
    found = {}
    for entry in os.listdir("/proc"):
        argv = cmdline(int(entry)) if entry.isdigit() else []
        if argv[1:3] == ["-m", "unionfs"] and "-f" in argv and any(str(root) in a for a in argv):
            found[argv[-1]] = int(entry)
    return found


def rootfs_point(point: str) -> bool:
    """A rootfs mount point: `imagebuild-rootfs-*/rootfs` (older versions: the `imagebuild-rootfs-*` dir)."""
    if os.path.basename(point) == "rootfs":
        point = os.path.dirname(point)
    return os.path.basename(point).startswith(ROOTFS_PREFIX)


def rootfs_daemons(root: Path) -> dict[str, int]:
    return {p: pid for p, pid in store_daemons(root).items() if rootfs_point(p)}


class Janitor:
    """Whatever a test leaves, however it ends: processes, mounts, daemons, directories."""

    def __init__(self) -> None:
        self.processes: dict[int, list[str]] = {}
        self.mounts: dict[str, int | None] = {}
        self.paths: list[Path] = []

    def process(self, pid: int) -> None:
        self.processes[pid] = cmdline(pid)

    def mount(self, point: str, daemon: int | None) -> None:
        self.mounts[point] = daemon

    def clean(self) -> None:
        for pid, argv in self.processes.items():
            if argv and cmdline(pid) == argv:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        for point, daemon in self.mounts.items():
            if is_mounted(point):
                subprocess.run([*UNIONFS, "umount", point], capture_output=True, timeout=60)
            if is_mounted(point):
                subprocess.run(["umount", "-l", point], capture_output=True)
            if daemon is not None and cmdline(daemon)[1:3] == ["-m", "unionfs"]:
                with contextlib.suppress(OSError):
                    os.kill(daemon, signal.SIGKILL)
            if rootfs_point(point):
                for directory in (point, os.path.dirname(point)) if point.endswith("/rootfs") else (point,):
                    with contextlib.suppress(OSError):
                        os.rmdir(directory)
        for path in self.paths:
            shutil.rmtree(path, ignore_errors=True)
        for pid in self.processes:  # a killed command's private dirs (name files' copies): `check` would name them
            for base in {private_base(), tempfile.gettempdir()}:
                for left in Path(base).glob(f"{PRIVATE_PREFIX}{pid}-*"):
                    shutil.rmtree(left, ignore_errors=True)


@pytest.fixture
def janitor() -> Iterator[Janitor]:
    j = Janitor()
    try:
        yield j
    finally:
        j.clean()


def start(tool: Tool, janitor: Janitor, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*IMAGEBUILD, "--root", str(tool.root), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    janitor.process(proc.pid)
    return proc


def kill_mid_sleep(tool: Tool, janitor: Janitor, proc: subprocess.Popen[bytes]) -> tuple[str, int]:
    """Wait until `proc`'s rootfs is mounted and its `sleep` runs in it, then SIGKILL `proc`; returns the rootfs
    mount point and its daemon."""
    before = set(rootfs_daemons(tool.root))
    new: dict[str, int] = {}

    def sleeping() -> bool:
        new.update({p: d for p, d in rootfs_daemons(tool.root).items() if p not in before})
        for point, daemon in new.items():
            janitor.mount(point, daemon)
        kids = descendants(proc.pid)
        for kid in kids:
            janitor.process(kid)
        sleeps = any(os.path.basename((cmdline(kid) or [""])[0]) == "sleep" for kid in kids)
        return sleeps and len(new) == 1 and is_mounted(next(iter(new)))

    try:
        assert wait_until(sleeping, 120, 0.05), "the command never started sleeping in its mount"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return next(iter(new.items()))


def gone(point: str, daemon: int) -> bool:
    return not is_mounted(point) and exited(daemon)


def test_a_run_killed_outright_leaves_no_mount_and_no_daemon(tool: Tool, janitor: Janitor) -> None:
    janitor.paths.append(tool.root / "containers" / "owner-run")
    proc = start(tool, janitor, "run", "--rm", "--name", "owner-run", "busybox", "sleep", "60")
    point, daemon = kill_mid_sleep(tool, janitor, proc)
    assert wait_until(lambda: gone(point, daemon), GONE_WITHIN, 0.05), (
        f"{GONE_WITHIN:g}s after the kill: mounted {is_mounted(point)}, daemon alive {not exited(daemon)}"
    )
    # the killed run's empty rootfs dir is all that is left; check names it and --repair removes it
    home = os.path.dirname(point)  # the private dir the mount point is in
    assert os.path.isdir(point) and os.path.basename(home).startswith(ROOTFS_PREFIX)
    found = tool.run("check", check=False)
    assert found.returncode == 1 and f"left at {home}\n" in found.stdout, found.stdout
    tool.run("check", "--repair")
    assert not os.path.lexists(home)


def test_a_build_killed_mid_run_leaves_no_mount_and_no_daemon(tool: Tool, janitor: Janitor, ctx: Path) -> None:
    dockerfile(ctx, "FROM busybox\nRUN sleep 60\n")
    proc = start(tool, janitor, "build", "--no-cache", "--run-fs", "unionfs", "-t", "owner-killed", str(ctx))
    point, daemon = kill_mid_sleep(tool, janitor, proc)
    assert wait_until(lambda: gone(point, daemon), GONE_WITHIN, 0.05), (
        f"{GONE_WITHIN:g}s after the kill: mounted {is_mounted(point)}, daemon alive {not exited(daemon)}"
    )
    assert "owner-killed" not in tool.run("images").stdout
    tool.run("check", "--repair")  # the killed build's scratch dirs
    assert not os.path.lexists(point) and not os.path.lexists(os.path.dirname(point))


def test_imagebuild_mount_outlives_its_command_and_a_killed_run_beside_it(
    tool: Tool, janitor: Janitor, tmp_path: Path
) -> None:
    point = tmp_path / "mnt"
    janitor.mount(str(point), None)
    tool.run("mount", "--read-only", "busybox", str(point))  # its command has exited
    daemons = [pid for p, pid in store_daemons(tool.root).items() if p == str(point)]
    assert is_mounted(point) and len(daemons) == 1
    janitor.mount(str(point), daemons[0])
    # a run of the same image, killed: its own mount goes, the user's stays
    janitor.paths.append(tool.root / "containers" / "owner-beside")
    proc = start(tool, janitor, "run", "--rm", "--name", "owner-beside", "busybox", "sleep", "60")
    run_point, run_daemon = kill_mid_sleep(tool, janitor, proc)
    assert wait_until(lambda: gone(run_point, run_daemon), GONE_WITHIN, 0.05)
    checked = tool.run("check", "--repair")
    assert str(point) not in checked.stdout
    assert is_mounted(point) and not exited(daemons[0]) and (point / "bin" / "busybox").is_file()
    tool.run("umount", str(point))
    assert wait_until(lambda: gone(str(point), daemons[0]), GONE_WITHIN, 0.05)


def test_check_names_an_ownerless_leftover_and_repair_clears_it(tool: Tool, janitor: Janitor, tmp_path: Path) -> None:
    # what an older version left: a rootfs (old name, no pid) served by a daemon with no owner, of this store
    point = tempfile.mkdtemp(prefix=ROOTFS_PREFIX)
    janitor.mount(point, None)
    container = tool.root / "containers" / "owner-leftover"
    janitor.paths.append(container)
    (container / "upper").mkdir(parents=True)
    (container / "work").mkdir()
    lower = sorted((tool.root / "layers").iterdir())[0]
    pidfile = tmp_path / "pid"
    options = f"lowerdir={lower},upperdir={container / 'upper'},workdir={container / 'work'}"
    subprocess.run(
        [sys.executable, "-m", "unionfs", "mount", "--pidfile", str(pidfile), "-o", options, point],
        check=True,
        capture_output=True,
        timeout=60,
    )
    daemon = int(pidfile.read_text())
    janitor.mount(point, daemon)
    found = tool.run("check", check=False)
    assert found.returncode == 1 and f"still mounted at {point}" in found.stdout, found.stdout
    repaired = tool.run("check", "--repair")
    assert f"still mounted at {point}" in repaired.stdout and "store repaired" in repaired.stdout
    assert wait_until(lambda: gone(point, daemon), GONE_WITHIN, 0.05)
    assert not os.path.lexists(point)  # and its rootfs dir is gone too
    assert point not in tool.run("check", check=False).stdout
