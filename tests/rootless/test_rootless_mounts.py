"""RUN --mount as an ordinary user: with a subordinate range (the mounts are made inside the build's user
namespace) and without one (bubblewrap makes them); the same results as a root build, nothing of a mount in a
layer, no secret in the store, and `prune --cache` removes what the RUN's other ids left in a cache."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.image.test_run_mounts import _grep_store
from tests.rootless.conftest import User, busybox_context
from tests.rootless.test_rootless_ids import NO_RANGE_USER

DOCKERFILE = (
    "FROM busybox AS tools\n"
    "RUN mkdir /out && echo from the stage > /out/made.txt\n"
    "FROM busybox\n"
    "RUN --mount=type=cache,target=/var/cache/thing echo built >> /var/cache/thing/log"
    " && wc -l < /var/cache/thing/log > /count\n"
    "RUN --mount=type=secret,id=token --mount=type=secret,id=token,env=TOKEN,target=/etc/app/token"
    ' cat /run/secrets/token > /dev/null && test "$TOKEN" = "$(cat /etc/app/token)"'
    " && sha256sum /run/secrets/token | cut -c1-64 > /digest\n"
    "RUN --mount=type=bind,from=tools,source=/out,target=/mnt/tools --mount=target=/src"
    " --mount=type=tmpfs,target=/scratch cat /mnt/tools/made.txt /src/input.txt > /both; ls -A /scratch > /empty\n"
    "RUN --mount=type=bind,target=/src,rw --mount=type=bind,from=tools,source=/out,target=/o,rw"
    " echo changed > /src/input.txt && echo changed > /o/made.txt\n"
)
RANGE_EXTRA = (
    "RUN echo 'u:x:1000:1000::/home/u:/bin/sh' >> /etc/passwd && mkdir -p /home/u && chown 1000:1000 /home/u\n"
    "USER u\n"
    "RUN --mount=type=cache,target=/home/u/.cache,uid=1000,gid=1000,id=user-cache"
    " --mount=type=secret,id=token,uid=1000 mkdir -p /home/u/.cache/deep && touch /home/u/.cache/deep/f"
    " && cat /run/secrets/token > /dev/null && id -u > /home/u/id\n"
)


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def no_range_user(user: User, workspace: Path) -> User:
    try:
        pwd.getpwnam(NO_RANGE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", NO_RANGE_USER])
    entry = pwd.getpwnam(NO_RANGE_USER)
    for table in ("/etc/subuid", "/etc/subgid"):
        lines = Path(table).read_text().splitlines() if os.path.exists(table) else []
        if any(line.split(":")[0] in (NO_RANGE_USER, str(entry.pw_uid)) for line in lines):
            pytest.skip(f"{NO_RANGE_USER} has a subordinate range in {table}")
    return User(NO_RANGE_USER, entry.pw_uid, entry.pw_gid, user.python, user.pythonpath, workspace)


@pytest.mark.parametrize("with_range", [True, False], ids=["subordinate-ids", "no-range"])
def test_run_mounts_as_an_ordinary_user(user: User, workspace: Path, with_range: bool) -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if shutil.which("bwrap") is None or not os.path.exists(busybox):
        pytest.skip("needs bubblewrap and busybox-static")
    if with_range and shutil.which("newuidmap") is None:
        pytest.skip("needs uidmap (newuidmap)")
    who = user if with_range else no_range_user(user, workspace)
    base = busybox_context(workspace, busybox)
    app = workspace / "app"
    app.mkdir()
    (app / "Dockerfile").write_text(DOCKERFILE + (RANGE_EXTRA if with_range else ""))
    (app / "input.txt").write_text("from the context\n")
    value = "s3cret-" + secrets.token_hex(16)
    token = workspace / "token"
    token.write_text(value)
    subprocess.run(["chmod", "-R", "a+rX", str(base), str(app)], check=True)
    store = workspace / "store"
    store.mkdir()
    for path in (workspace, store, token):
        os.chown(path, who.uid, who.gid)
    os.chmod(token, 0o600)

    def imagebuild(*args: str) -> str:
        command = [who.python, "-m", "imagebuild", "--root", str(store), *args]
        return who.run(*command, timeout=600).stdout

    imagebuild("build", "-t", "busybox", str(base))
    for count in ("1", "2"):
        out = imagebuild("build", "--no-cache", "-t", "mounts", "--secret", f"id=token,src={token}", str(app))
        assert value not in out
        inspected = json.loads(imagebuild("inspect", "mounts"))[0]
        layers = [store / "layers" / diff_id[7:] for diff_id in inspected["RootFS"]["Layers"]]
        steps = layers[2:]  # the busybox base's two layers first
        assert (steps[0] / "count").read_text().strip() == count  # the cache outlived the first build
        assert tree(steps[0]) == ["count"]
        assert tree(steps[1]) == ["digest"]
        assert tree(steps[2]) == ["both", "empty"]
        assert (steps[2] / "both").read_text() == "from the stage\nfrom the context\n"
        assert (steps[2] / "empty").read_text() == ""
        assert tree(steps[3]) == []  # the read-write binds' changes went nowhere
        if with_range:
            assert [p for p in tree(steps[5]) if p != "etc"] == ["home", "home/u", "home/u/id"]
            assert (steps[5] / "home/u/id").read_text() == "1000\n"
    assert (app / "input.txt").read_text() == "from the context\n"
    assert _grep_store(store, value.encode()) == []
    pruned = imagebuild("prune", "--cache")
    assert f"Deleted {2 if with_range else 1} RUN caches, freed " in pruned, pruned
    assert not list((store / "caches").iterdir())
