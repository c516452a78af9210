"""The unionfs command as a user meets it: mounting forms, unmounting, and one-line errors for bad input."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.fs.conftest import Mounter
from tests.support import UNIONFS, is_mounted, reap, wait_until, write
from unionfs.api import exited


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*UNIONFS, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    paths = {n: tmp_path / n for n in ("low", "low2", "up", "work", "mnt")}
    for p in paths.values():
        p.mkdir()
    write(paths["low"] / "hello", "hello\n")
    return paths


def wait_mounted(point: Path, want: bool = True, timeout: float = 20) -> bool:
    return wait_until(lambda: is_mounted(point) == want, timeout, 0.05)


def bad(args: list[str], *fragments: str) -> None:
    done = run(*args)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unionfs: error: "), done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_input_gets_one_line_and_status_2(tree: dict[str, Path], tmp_path: Path) -> None:
    low, up, work, mnt = (str(tree[n]) for n in ("low", "up", "work", "mnt"))
    bad(["mount", "-o", f"lowerdir={tmp_path}/nope", mnt], "does not exist", "nope")
    write(tmp_path / "afile", "x")
    bad(["mount", "-o", f"lowerdir={tmp_path}/afile", mnt], "not a directory")
    bad(["mount", "-o", f"lowerdir={low}", str(tmp_path / "nomnt")], "mount point", "does not exist")
    bad(["mount", "-o", f"lowerdir={low},upperdir={low}/sub,workdir={work}", mnt], "does not exist")
    os.mkdir(tree["low"] / "sub")
    bad(["mount", "-o", f"lowerdir={low},upperdir={low}/sub,workdir={work}", mnt], "overlap")
    bad(["mount", "-o", f"lowerdir={low}", f"{low}/sub"], "inside layer")
    bad(["mount", "-o", f"lowerdir={low},upperdir={up}", mnt], "upperdir given without workdir")
    write(tree["work"] / "stray", "")
    bad(["mount", "-o", f"lowerdir={low},upperdir={up},workdir={work}", mnt], "not ours", "stray")
    os.unlink(tree["work"] / "stray")
    shm = Path("/dev/shm")
    if shm.is_dir() and os.stat(shm).st_dev != os.stat(up).st_dev:
        other = Path(os.path.join(shm, f"unionfs-test-{os.getpid()}"))
        other.mkdir()
        try:
            bad(["mount", "-o", f"lowerdir={low},upperdir={up},workdir={other}", mnt], "another filesystem")
        finally:
            other.rmdir()
    bad(["mount", "-o", f"lowerdir={low},bogus=1", mnt], "unknown mount option", "bogus")
    bad(["mount", "-o", f"lowerdir={low},whiteout=maybe", mnt], "whiteout=maybe")
    bad(["mount", mnt], "no lower layer")
    assert not is_mounted(tree["mnt"])


def test_already_mounted_is_refused(mounter: Mounter, tree: dict[str, Path]) -> None:
    m = mounter([tree["low"]], name="mnt")
    bad(["mount", "-o", f"lowerdir={tree['low']}", str(m.mountpoint)], "already a mount point")


def test_unusable_dev_fuse_says_how_to_fix() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to a user without /dev/fuse access")
    if os.stat("/dev/fuse").st_mode & 0o006:
        pytest.skip("/dev/fuse is open to everyone here")
    base = Path(tempfile.mkdtemp(prefix="unionfs-test-"))
    os.chmod(base, 0o755)
    tree = {n: base / n for n in ("low", "mnt")}
    for p in tree.values():
        p.mkdir()
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            *UNIONFS,
            "mount",
            "-o",
            f"lowerdir={tree['low']}",
            str(tree["mnt"]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": "/tmp"},
    )
    shutil.rmtree(base)
    assert done.returncode == 2 and "/dev/fuse" in done.stderr and "chmod" in done.stderr, done


def test_read_only_without_upper(mounter: Mounter, tree: dict[str, Path]) -> None:
    m = mounter([tree["low"]]).mountpoint
    assert (m / "hello").read_text() == "hello\n"
    for attempt in (lambda: (m / "new").write_text("x"), lambda: os.unlink(m / "hello"), lambda: os.mkdir(m / "d")):
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS
    assert sorted(os.listdir(tree["low"])) == ["hello"]


def test_lower_and_upper_flags_and_both_unmount_tools(tree: dict[str, Path]) -> None:
    mnt = tree["mnt"]
    done = run(
        "mount",
        "--lower",
        str(tree["low"]),
        "--lower",
        str(tree["low2"]),
        "--upper",
        str(tree["up"]),
        "--work",
        str(tree["work"]),
        "--pidfile",
        str(tree["up"].parent / "pid"),
        str(mnt),
    )
    assert done.returncode == 0, done.stderr
    pid = int((tree["up"].parent / "pid").read_text())
    try:
        (mnt / "written").write_text("w")
        assert (tree["up"] / "written").read_text() == "w"
        assert subprocess.run(["fusermount3", "-u", str(mnt)]).returncode == 0
        assert wait_mounted(mnt, False)
        reap(pid)
        assert exited(pid)
    finally:
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
        reap(pid)
    assert run("umount", str(mnt)).returncode == 2  # not mounted any more: one clear line


def test_bare_form_and_foreground_with_sigterm(tree: dict[str, Path]) -> None:
    """podman/buildah's mount_program calls `PROGRAM -o OPTIONS MOUNTPOINT`; -f stays in the foreground."""
    mnt = tree["mnt"]
    opts = f"lowerdir={tree['low']},upperdir={tree['up']},workdir={tree['work']},nodev,context=whatever"
    proc = subprocess.Popen([*UNIONFS, "-f", "-o", opts, str(mnt)], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_mounted(mnt), proc.stderr
        assert (mnt / "hello").read_text() == "hello\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not is_mounted(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)


def test_sigint_unmounts_a_background_daemon(mounter: Mounter, tree: dict[str, Path]) -> None:
    m = mounter([tree["low"]], tree["up"], tree["work"])
    assert m.pid is not None
    os.kill(m.pid, signal.SIGINT)
    assert wait_mounted(m.mountpoint, False)
