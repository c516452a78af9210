"""imagebuild as an ordinary user: the same Dockerfile and context give the same image as a root build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rootless.conftest import User, busybox_context

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Both builds clamp to the same epoch: with it their dates and the RUN steps' file times are the same, so equal
# image ids mean equal files, owners and modes; without it each build is dated when it ran.
EPOCH = "1700000000"


def built_id(output: str) -> str:
    return next(line.split()[-1] for line in output.splitlines() if line.startswith("Successfully built"))


def test_rootless_build_and_run_match_a_root_build(user: User, workspace: Path) -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if shutil.which("bwrap") is None or not os.path.exists(busybox):
        pytest.skip("needs bubblewrap and busybox-static")
    base = busybox_context(workspace, busybox)
    app = workspace / "app"
    shutil.copytree(EXAMPLES / "app", app)
    for path in (base, app):
        subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)
    ids = {}
    for who in ("root", "user"):
        store = workspace / f"store-{who}"
        store.mkdir()
        if who == "user":
            os.chown(store, user.uid, user.gid)

        def run(*args: str, who: str = who, store: Path = store) -> str:
            command = ["-m", "imagebuild", "--root", str(store), *args]
            if who == "user":
                return user.run("env", f"SOURCE_DATE_EPOCH={EPOCH}", user.python, *command).stdout
            env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
            return subprocess.run(
                [sys.executable, *command], check=True, capture_output=True, text=True, env=env
            ).stdout

        base_id = built_id(run("build", "-t", "busybox:1.35", str(base)))
        ids[who] = (base_id, built_id(run("build", "-t", "app", str(app))))
        if who == "user":
            out = run("run", "--rm", "app", "sh", "-c", "id -u; head -c 15 /app/www/index.html")
            assert out.split("\n")[:2] == ["1000", "<!doctype html>"]  # the image's USER, reading its page
    assert ids["user"] == ids["root"]
