"""`build -o type=local` as an ordinary user: the rootfs's owners as the user's namespace maps them (the image's
root is the user, its other ids the user's subordinate ids); without a subordinate range, every file is the
user's and says whose it is in the image in `user.containers.override_stat`."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from tests.rootless.conftest import User, busybox_context

DOCKERFILE = """\
FROM busybox:1.35
COPY --chown=1000:1001 owned /owned
COPY --chown=7:8 --chmod=750 owned /srv/seven
"""


def subordinate_start(table: str, name: str) -> int:
    for line in Path(table).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[1])
    raise AssertionError(f"{name} has no range in {table}")


def build_with_outputs(user: User, workspace: Path, env: list[str]) -> tuple[Path, Path]:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if shutil.which("bwrap") is None or not os.path.exists(busybox):
        pytest.skip("needs bubblewrap and busybox-static")
    base = busybox_context(workspace, busybox)
    ctx = workspace / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "owned").write_text("whose?\n")
    mine = workspace / "mine"
    mine.mkdir()
    os.chown(mine, user.uid, user.gid)
    for path in (base, ctx):
        for dirpath, _dirs, files in os.walk(path):
            os.chmod(dirpath, 0o755)
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o755)
    store = mine / "store"

    def imagebuild(*args: str) -> None:
        user.run("env", *env, user.python, "-m", "imagebuild", "--root", str(store), *args, timeout=300)

    imagebuild("build", "-t", "busybox:1.35", str(base))
    local, flat = mine / "rootfs", mine / "rootfs.tar"
    oci = f"type=oci,dest={mine / 'image.tar'}"
    imagebuild("build", "-o", f"type=local,dest={local}", "-o", f"type=tar,dest={flat}", "-o", oci, str(ctx))
    return local, flat


def test_rootless_local_output_maps_owners_through_the_users_namespace(user: User, workspace: Path) -> None:
    local, flat = build_with_outputs(user, workspace, [])
    if shutil.which("skopeo") is not None:  # an ordinary user's skopeo unpacks the OCI tar (it cannot chown)
        user.run("skopeo", "inspect", f"oci-archive:{local.parent / 'image.tar'}")
    uid0, gid0 = subordinate_start("/etc/subuid", user.name), subordinate_start("/etc/subgid", user.name)
    checked = 0
    with tarfile.open(flat) as tar:
        for member in tar:
            st = os.lstat(local / member.name)
            want_uid = user.uid if member.uid == 0 else uid0 + member.uid - 1
            want_gid = user.gid if member.gid == 0 else gid0 + member.gid - 1
            assert (st.st_uid, st.st_gid) == (want_uid, want_gid), member.name
            if not member.issym():
                assert stat.S_IMODE(st.st_mode) == member.mode, member.name
            checked += 1
    assert checked > 100 and os.lstat(local / "owned").st_uid == uid0 + 999
    assert (os.lstat(local / "srv/seven").st_uid, stat.S_IMODE(os.lstat(local / "srv/seven").st_mode)) == (
        uid0 + 6,
        0o750,
    )


def test_rootless_local_output_without_a_range_keeps_owners_in_records(user: User, workspace: Path) -> None:
    tools = workspace / "bin"  # the user's tools, without newuidmap/newgidmap: no subordinate range to use
    tools.mkdir()
    for name in os.listdir("/usr/bin"):
        if name not in ("newuidmap", "newgidmap"):
            os.symlink(os.path.join("/usr/bin", name), tools / name)
    local, flat = build_with_outputs(user, workspace, [f"PATH={tools}:/usr/sbin"])
    with tarfile.open(flat) as tar:
        members = {m.name: m for m in tar}
    for name in ("owned", "srv/seven", "bin/busybox"):
        st = os.lstat(local / name)
        assert (st.st_uid, st.st_gid) == (user.uid, user.gid)
        record = os.getxattr(local / name, "user.containers.override_stat").decode().split(":")
        member = members[name]
        assert (int(record[0]), int(record[1]), int(record[2], 8) & 0o7777) == (member.uid, member.gid, member.mode)
    assert members["owned"].uid == 1000 and members["srv/seven"].mode == 0o750
