"""The README's command blocks run as printed, in order, for root and for an ordinary user
(scripts/readme_walk.py; `make check-fresh` runs the same walk in clean Debian trees, from a login shell)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rootless.conftest import User, own_tree
from tests.support import fuse_usable

REPO = Path(__file__).resolve().parents[2]
WALK = REPO / "scripts" / "readme_walk.py"


def needs() -> None:
    reason = fuse_usable()
    if reason is not None:
        pytest.skip(reason)
    for tool in ("bwrap", "docker-registry"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make deps installs it)")
    if not os.path.exists("/bin/busybox"):
        pytest.skip("busybox-static is not installed")


def checkout_copy(into: Path) -> Path:
    """What the README's commands use of the checkout: the README and the examples."""
    copy = into / "checkout"
    copy.mkdir()
    shutil.copy(REPO / "README.md", copy / "README.md")
    shutil.copytree(REPO / "examples", copy / "examples", ignore=shutil.ignore_patterns("busybox/busybox"))
    return copy


def commands_bin(into: Path, python: str, pythonpath: str) -> Path:
    """`imagebuild` and `unionfs` on PATH, as `make install` puts them."""
    bin_dir = into / "bin"
    bin_dir.mkdir()
    for name in ("imagebuild", "unionfs"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nPYTHONPATH={pythonpath} exec {python} -m {name} "$@"\n')
        script.chmod(0o755)
    return bin_dir


def walk_result(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


def test_the_readme_runs_as_printed_for_root(tmp_path: Path) -> None:
    needs()
    if os.geteuid() != 0:
        pytest.skip("the root walk needs root")
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = commands_bin(tmp_path, sys.executable, str(REPO))
    checkout = checkout_copy(tmp_path)
    env = {"HOME": str(home), "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    done = subprocess.run(
        [sys.executable, str(WALK), "--readme", str(checkout / "README.md")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, walk_result(done)
    assert "nothing left behind" in done.stdout


def test_the_readme_runs_as_printed_for_an_ordinary_user(user: User, workspace: Path) -> None:
    needs()
    bin_dir = commands_bin(workspace, user.python, user.pythonpath)
    checkout = checkout_copy(workspace)
    shutil.copy(WALK, workspace / "readme_walk.py")
    home = workspace / "home"
    home.mkdir()
    for path in (home, checkout):
        own_tree(path, user)
    script = (
        f"export HOME={home} PATH={bin_dir}:$PATH; "
        f"exec {user.python} {workspace / 'readme_walk.py'} --readme {checkout / 'README.md'}"
    )
    done = user.run("sh", "-c", script, check=False, timeout=600)
    assert done.returncode == 0, walk_result(done)
    assert "nothing left behind" in done.stdout
