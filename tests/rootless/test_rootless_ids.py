"""imagebuild as an ordinary user with a subordinate id range, as buildah and podman use it: a RUN has every id of
the container (chown to another id, a command dropped to uid 65534 with ordinary permission checks), and its
layer records the container's ids, the same owners and modes as a root build of the same Dockerfile."""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.rootless.conftest import User, busybox_context

# busybox has no setpriv or chpst; its `su` switches ids as root does, given /etc/passwd
DOCKERFILE = (
    "FROM busybox\n"
    "RUN mkdir -p /etc /data && mkdir -m 1777 /tmp"
    " && printf 'root:x:0:0::/root:/bin/sh\\nnobody:x:65534:65534::/:/bin/sh\\n' > /etc/passwd"
    " && printf 'root:x:0:\\nnogroup:x:65534:\\n' > /etc/group && echo root-only-writes > /etc/conf\n"
    "RUN echo mine > /data/f && chown 42:42 /data/f && chmod 0640 /data/f && mkdir /data/d && chown 7:8 /data/d\n"
    "RUN su nobody -s /bin/sh -c 'id -u; cat /etc/conf; if echo x >> /etc/conf; then echo WROTE; fi; touch /tmp/n'\n"
)


def built_id(output: str) -> str:
    return next(line.split()[-1] for line in output.splitlines() if line.startswith("Successfully built"))


def owners(tar_bytes: bytes) -> dict[str, tuple[int, int, int]]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return {m.name.lstrip("./"): (m.uid, m.gid, m.mode) for m in tar.getmembers()}


def layers(store: Path, image_id: str, run: Callable[..., str]) -> list[dict[str, tuple[int, int, int]]]:
    """The image's layers as their tars record them (an OCI layout export)."""
    out = store.parent / f"{store.name}-layout"
    run("export", image_id, "-o", str(out))
    index = json.loads((out / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((out / "blobs" / "sha256" / digest).read_text())
    found = []
    for layer in manifest["layers"]:
        data = (out / "blobs" / "sha256" / layer["digest"].split(":")[1]).read_bytes()
        found.append(owners(data))
    return found


def test_a_rootless_run_has_every_id_and_records_them_as_a_root_build(user: User, workspace: Path) -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if shutil.which("bwrap") is None or shutil.which("newuidmap") is None or not os.path.exists(busybox):
        pytest.skip("needs bubblewrap, uidmap (newuidmap) and busybox-static")
    base = busybox_context(workspace, busybox)
    app = workspace / "app"
    app.mkdir()
    (app / "Dockerfile").write_text(DOCKERFILE)
    for path in (base, app):
        subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)
    seen: dict[str, list[dict[str, tuple[int, int, int]]]] = {}
    for who in ("root", "user"):
        store = workspace / f"store-{who}"
        store.mkdir()
        if who == "user":
            os.chown(store, user.uid, user.gid)
            os.chown(workspace, user.uid, user.gid)

        def run(*args: str, who: str = who, store: Path = store) -> str:
            command = ["-m", "imagebuild", "--root", str(store), *args]
            if who == "user":
                return user.run(user.python, *command, timeout=300).stdout
            done = subprocess.run([sys.executable, *command], capture_output=True, text=True)
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        run("build", "-t", "busybox", str(base))
        out = run("build", "-t", "ids", str(app))
        assert "] 65534\n" in out and "] root-only-writes\n" in out, out  # uid 65534 reads the root file
        assert "] WROTE" not in out and "Permission denied" in out, out  # and may not write it
        shown = run("run", "--rm", "ids", "sh", "-c", "stat -c '%n %u:%g %a' /data/f /data/d /tmp/n /etc/conf")
        assert shown.split("\n")[:4] == [
            "/data/f 42:42 640",
            "/data/d 7:8 755",
            "/tmp/n 65534:65534 644",
            "/etc/conf 0:0 644",
        ], shown
        seen[who] = layers(store, built_id(out), run)[2:]  # the three RUN steps on the base
    assert seen["user"][1]["data/f"][:2] == (42, 42)
    assert seen["user"] == seen["root"]  # the same owners and modes, layer by layer


NO_RANGE_USER = "imagebuild-norange"


def test_without_a_range_a_run_that_switches_ids_says_how_to_add_one(user: User, workspace: Path) -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if shutil.which("bwrap") is None or not os.path.exists(busybox):
        pytest.skip("needs bubblewrap and busybox-static")
    try:
        pwd.getpwnam(NO_RANGE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", NO_RANGE_USER])
    entry = pwd.getpwnam(NO_RANGE_USER)
    for table in ("/etc/subuid", "/etc/subgid"):
        lines = Path(table).read_text().splitlines() if os.path.exists(table) else []
        if any(line.split(":")[0] in (NO_RANGE_USER, str(entry.pw_uid)) for line in lines):
            pytest.skip(f"{NO_RANGE_USER} has a subordinate range in {table}")
    other = User(NO_RANGE_USER, entry.pw_uid, entry.pw_gid, user.python, user.pythonpath, workspace)
    base = busybox_context(workspace, busybox)
    app = workspace / "app"
    app.mkdir()
    (app / "Dockerfile").write_text("FROM busybox\nRUN echo x > /f && chown 42:42 /f\n")
    subprocess.run(["chmod", "-R", "a+rX", str(base), str(app)], check=True)
    os.chown(workspace, entry.pw_uid, entry.pw_gid)
    store = str(workspace / "store")
    other.run(user.python, "-m", "imagebuild", "--root", store, "build", "-t", "busybox", str(base), timeout=300)
    failed = other.run(user.python, "-m", "imagebuild", "--root", store, "build", str(app), check=False, timeout=300)
    assert failed.returncode != 0
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "usermod --add-subuids 100000-165535 --add-subgids 100000-165535" in lines[0], lines
    assert NO_RANGE_USER in lines[0]
