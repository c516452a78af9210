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


def test_rootless_parallel_stages_match_a_serial_build_and_a_failure_leaves_nothing(
    user: User, workspace: Path
) -> None:
    """Stages at once as an ordinary user (each RUN in its own user namespace): the serial build's image, and
    a failing stage kills the others' commands and cleans their mounts and scratch layers."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if shutil.which("bwrap") is None or not os.path.exists(busybox):
        pytest.skip("needs bubblewrap and busybox-static")
    base = busybox_context(workspace, busybox)
    store = workspace / "store"
    store.mkdir()
    os.chown(store, user.uid, user.gid)
    good, bad = workspace / "good", workspace / "bad"
    final = "FROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n"
    for path, stage_b in ((good, "RUN echo b > /b"), (bad, "RUN sleep 1 && exit 5")):
        path.mkdir()
        (path / "Dockerfile").write_text(
            f"FROM busybox AS a\nRUN sleep 2 && echo a > /a\nFROM busybox AS b\n{stage_b}\n{final}"
        )
    (bad / "Dockerfile").write_text((bad / "Dockerfile").read_text().replace("sleep 2", "sleep 45"))
    subprocess.run(["chmod", "-R", "a+rX", str(workspace)], check=True)

    def build(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["env", f"SOURCE_DATE_EPOCH={EPOCH}", user.python, "-m", "imagebuild", "--root", str(store)]
        return user.run(*command, "build", *args, check=check)

    build("-t", "busybox", str(base))
    serial = built_id(build("--no-cache", "--jobs", "1", str(good)).stdout)
    assert built_id(build("--no-cache", str(good)).stdout) == serial
    failed = build(str(bad), check=False)
    assert failed.returncode == 5 and failed.stderr.strip().endswith("RUN failed with exit status 5")
    assert "cancelled: another stage failed" in failed.stdout
    assert os.listdir(store / "tmp") == []
    with open("/proc/self/mountinfo") as info:
        assert not [line for line in info if str(store) in line]
    leftovers = subprocess.run(["pgrep", "-f", "-u", str(user.uid), "sleep 45"], capture_output=True, text=True)
    assert leftovers.stdout == ""
