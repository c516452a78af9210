"""A mount with an owner (`--owner-fd`) goes when its owner does, however the owner ends, through the same clean
shutdown as SIGTERM: the upper is left whole and mounts again as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import UNIONFS, UnionMount, is_mounted, upper_snapshot, wait_until, write
from unionfs.api import exited, kill

GONE_WITHIN = 10.0  # seconds: the daemon unmounts at once and exits in about two

# The owner: makes a pipe, mounts with its read end as --owner-fd, keeps the write end and sleeps (until killed).
OWNER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    read_end, write_end = os.pipe()
    subprocess.run([sys.executable, "-m", "unionfs", "mount", *sys.argv[1:-1], "--owner-fd", str(read_end),
                    sys.argv[-1]], pass_fds=(read_end,), check=True)
    os.close(read_end)
    print("mounted", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[dict[str, Path]]:
    paths = {n: tmp_path / n for n in ("low", "up", "work", "mnt")}
    for p in paths.values():
        p.mkdir()
    write(paths["low"] / "kept", "kept\n")
    write(paths["low"] / "changed", "old\n")
    write(paths["low"] / "removed", "removed\n")
    write(paths["low"] / "dir" / "inside", "inside\n")
    yield paths
    # whatever happened: no mount and no daemon left behind
    pidfile = tmp_path / "pid"
    if pidfile.exists() and pidfile.read_text().strip():
        kill(int(pidfile.read_text()))
    if is_mounted(paths["mnt"]):
        subprocess.run(["fusermount3", "-uz", str(paths["mnt"])], capture_output=True)
        subprocess.run(["umount", "-l", str(paths["mnt"])], capture_output=True)


def options(tree: dict[str, Path]) -> str:
    return f"lowerdir={tree['low']},upperdir={tree['up']},workdir={tree['work']}"


def mount_owned(tree: dict[str, Path], tmp_path: Path, owner_fd: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *UNIONFS,
            "mount",
            "-o",
            options(tree),
            "--owner-fd",
            str(owner_fd),
            "--pidfile",
            str(tmp_path / "pid"),
            str(tree["mnt"]),
        ],
        pass_fds=(owner_fd,),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_mount_goes_when_its_owner_is_killed_and_its_upper_is_whole(tree: dict[str, Path], tmp_path: Path) -> None:
    pidfile, log = tmp_path / "pid", tmp_path / "log"
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            OWNER,
            "-o",
            options(tree),
            "--pidfile",
            str(pidfile),
            "--log",
            str(log),
            str(tree["mnt"]),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline() == "mounted\n", "the owner could not mount"
        daemon = int(pidfile.read_text())
        mnt = tree["mnt"]
        write(mnt / "new", "new\n")
        with open(mnt / "changed", "a") as f:
            f.write("appended\n")
        os.unlink(mnt / "removed")
        os.rename(mnt / "dir", mnt / "moved")
        write(mnt / "moved" / "added", "added\n")
        big = os.urandom(3 << 20)
        write(mnt / "big", big)
        with open(mnt / "open-at-the-end", "w") as still_open:  # an fd open through the mount as the owner dies
            still_open.write("written before\n")
            still_open.flush()
            owner.send_signal(signal.SIGKILL)
            owner.wait()
            assert wait_until(lambda: not is_mounted(mnt) and exited(daemon), GONE_WITHIN, 0.05), (
                f"mounted: {is_mounted(mnt)}, daemon alive: {not exited(daemon)}\n{log.read_text()}"
            )
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    said = log.read_text()
    assert "owner gone" in said and "Traceback" not in said and "ERROR" not in said, said
    assert os.listdir(tree["work"] / "unionfs") == []  # nothing half-made left in the staging area
    up = tree["up"]
    assert (up / "new").read_text() == "new\n"
    assert (up / "changed").read_text() == "old\nappended\n"
    assert (up / "moved" / "inside").read_text() == "inside\n" and (up / "moved" / "added").read_text() == "added\n"
    assert (up / "big").read_bytes() == big
    assert (up / "open-at-the-end").read_text() == "written before\n"
    before = upper_snapshot(up)
    assert before["removed"] == ("whiteout",) and before["dir"] == ("whiteout",)
    with UnionMount(tmp_path / "again", [tree["low"]], up, tree["work"]) as again:  # and it mounts as it was
        assert sorted(os.listdir(again)) == ["big", "changed", "kept", "moved", "new", "open-at-the-end"]
        assert (again / "changed").read_text() == "old\nappended\n"
        assert (again / "moved" / "inside").read_text() == "inside\n"
    assert upper_snapshot(up) == before


def test_an_owner_gone_before_the_mount_is_ready_still_takes_it_down(tree: dict[str, Path], tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)  # the owner died while the mount was being made
    try:
        done = mount_owned(tree, tmp_path, read_end)
    finally:
        os.close(read_end)
    assert done.returncode == 0, done.stderr
    daemon = int((tmp_path / "pid").read_text())
    assert wait_until(lambda: not is_mounted(tree["mnt"]) and exited(daemon), GONE_WITHIN, 0.05)


def test_a_mount_whose_owner_lives_stays(tree: dict[str, Path], tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        done = mount_owned(tree, tmp_path, read_end)
        assert done.returncode == 0, done.stderr
        os.close(read_end)
        read_end = -1
        assert not wait_until(lambda: not is_mounted(tree["mnt"]), 1.0, 0.05)  # the mount command's exit is not ours
        assert (tree["mnt"] / "kept").read_text() == "kept\n"
    finally:
        if read_end >= 0:
            os.close(read_end)
        os.close(write_end)
    daemon = int((tmp_path / "pid").read_text())
    assert wait_until(lambda: not is_mounted(tree["mnt"]) and exited(daemon), GONE_WITHIN, 0.05)


def test_a_bad_owner_fd_is_one_line_and_status_2(tree: dict[str, Path], tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    plain = os.open(tmp_path / "plain", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        for fd, fragment in (
            (read_end + 100, "not an open file"),
            (plain, "not a pipe"),
            (write_end, "not the read end"),
        ):
            done = subprocess.run(
                [*UNIONFS, "mount", "-o", options(tree), "--owner-fd", str(fd), str(tree["mnt"])],
                pass_fds=(read_end, write_end, plain),
                capture_output=True,
                text=True,
                timeout=60,
            )
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("unionfs: error: --owner-fd"), done
            assert fragment in lines[0]
            assert not is_mounted(tree["mnt"])
    finally:
        for fd in (read_end, write_end, plain):
            os.close(fd)
