"""We are a drop-in for fuse-overlayfs in the containers stack: buildah's overlay driver with mount_program=unionfs
builds and runs an image as an ordinary user."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.rootless.conftest import User, own_tree

CONTAINERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN echo built-on-unionfs > /proof && rm /bin/vi
CMD ["/bin/sh"]
"""


def test_buildah_builds_and_runs_with_unionfs_as_mount_program(user: User, workspace: Path) -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if shutil.which("buildah") is None or (shutil.which("crun") is None and shutil.which("runc") is None):
        pytest.skip("buildah and an OCI runtime (crun) are needed: apt-get install buildah crun")
    if not os.path.exists(busybox):
        pytest.skip("busybox-static is needed")
    wrapper = workspace / "unionfs"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={user.pythonpath} exec {user.python} -m unionfs "$@"\n')
    wrapper.chmod(0o755)
    home = workspace / "home"
    (home / ".config" / "containers").mkdir(parents=True)
    (home / ".config" / "containers" / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\n[storage.options.overlay]\nmount_program = "{wrapper}"\n'
    )
    ctx = workspace / "ctx"
    ctx.mkdir()
    shutil.copy(busybox, ctx / "busybox")
    (ctx / "Containerfile").write_text(CONTAINERFILE)
    for path in (home, ctx):
        own_tree(path, user)
    script = f"""
set -e
export HOME={home} XDG_RUNTIME_DIR={home}/run
mkdir -p $XDG_RUNTIME_DIR
cd {ctx}
buildah --log-level=error bud --isolation=chroot --ulimit nofile=$(ulimit -Hn):$(ulimit -Hn) -t ub . >/dev/null
buildah info | grep -c 'mount_program={wrapper}'
ctr=$(buildah from ub)
buildah run --isolation=chroot $ctr cat /proof
buildah run --isolation=chroot $ctr sh -c 'test -e /bin/vi || echo vi-deleted'
buildah rm $ctr >/dev/null
buildah rmi -a -f >/dev/null 2>&1 || true
buildah unshare rm -rf {home}/.local/share/containers
"""
    done = user.run("sh", "-c", script, timeout=600)
    assert done.stdout.split() == ["1", "built-on-unionfs", "vi-deleted"], done.stderr
