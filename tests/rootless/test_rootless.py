"""An ordinary user mounts a root-owned image tree: owners and modes show as the image has them, and writes,
chown, chmod and deletes work and are kept so that a later mount (as root too) shows the same view."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rootless.conftest import User
from tests.support import UNIONFS, UnionMount, snapshot, upper_snapshot, write
from unionfs.ownership import OverrideStat
from unionfs.whiteout import OVERRIDE_STAT


def image_tree(base: Path) -> list[Path]:
    """Three root-owned layers as an image has them (readable by all, as image layers are)."""
    l1, l2, l3 = base / "l1", base / "l2", base / "l3"
    write(l3 / "bin" / "su", "setuid\n", 0o4755)
    write(l3 / "etc" / "shadow", "root:*:\n", 0o640)
    os.chmod(l3 / "etc" / "shadow", 0o644)  # readable here so the daemon can copy it up; owner is what matters
    write(l3 / "etc" / "passwd", "root:x:0:0\n")
    write(l3 / "var" / "www" / "index.html", "<h1>hi</h1>\n")
    os.chown(l3 / "var" / "www" / "index.html", 33, 33)
    os.chown(l3 / "var" / "www", 33, 33)
    write(l3 / "tmp" / ".keep", "")
    os.chmod(l3 / "tmp", 0o1777)
    write(l3 / "old" / "a", "a\n")
    write(l3 / "gone", "g\n")
    os.mknod(l3 / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(l3 / "null", 0o666)
    write(l2 / ".wh.gone", "")
    write(l2 / "old" / ".wh..wh..opq", "")
    write(l2 / "old" / "b", "b\n")
    write(l2 / "etc" / "hostname", "box\n")
    (l1 / "opt").mkdir(parents=True)
    os.setxattr(l1 / "opt", "user.overlay.opaque", b"y")
    write(l1 / "opt" / "app", "app\n", 0o755)
    for layer in (l1, l2, l3):
        for dirpath, dirs, _files in os.walk(layer):
            for d in dirs:
                if d != "tmp":
                    os.chmod(os.path.join(dirpath, d), os.stat(os.path.join(dirpath, d)).st_mode | 0o755)
    return [l1, l2, l3]


def changes(user: User, mnt: Path, prefix: tuple[str, ...] = ()) -> None:
    script = f"""
set -e
cd {mnt}
echo more >> etc/passwd
echo changed > var/www/index.html
chown 1234:5678 etc/hostname
chmod 600 etc/shadow
chmod 4711 bin/su
mkfifo run.fifo
rm old/b
rm -r var/www
mkdir -p home/u && echo mine > home/u/f
mv etc/hostname etc/hostname.old
if mknod dev.tty c 5 0 2>/dev/null; then echo device-created; fi
"""
    done = user.run(*prefix, "sh", "-c", script)
    assert "device-created" not in done.stdout  # the kernel refuses device nodes to an ordinary user


def mount_as_user(user: User, layers: list[Path], up: Path, work: Path, mnt: Path, *opts: str) -> None:
    options = "lowerdir=" + ":".join(map(str, layers)) + f",upperdir={up},workdir={work}"
    if opts:
        options += "," + ",".join(opts)
    user.unionfs("mount", "-o", options, str(mnt))


@pytest.fixture
def setup(user: User, workspace: Path) -> tuple[list[Path], Path, Path, Path]:
    layers = image_tree(workspace / "layers")
    up, work, mnt = workspace / "up", workspace / "work", workspace / "mnt"
    for d in (up, work, mnt):
        d.mkdir()
        os.chown(d, user.uid, user.gid)
    return layers, up, work, mnt


def test_user_sees_image_owners_and_its_changes_survive_a_root_remount(user: User, setup, workspace: Path) -> None:
    layers, up, work, mnt = setup
    mount_as_user(user, layers, up, work, mnt)
    try:
        before = user.snapshot(mnt)
        assert before["bin/su"][:4] == [stat.S_IFREG, 0o4755, 0, 0]
        assert before["var/www/index.html"][2:4] == [33, 33]
        assert before["null"][0] == stat.S_IFCHR and before["null"][-1] == os.makedev(1, 3)
        assert "gone" not in before and "old/a" not in before and before["opt/app"][1] == 0o755
        changes(user, mnt)
        after = user.snapshot(mnt)
    finally:
        user.unionfs("umount", str(mnt), check=False)
    assert after["etc/passwd"][2:4] == [0, 0] and after["etc/passwd"][-1] != before["etc/passwd"][-1]
    assert after["etc/hostname.old"][2:4] == [1234, 5678]
    assert after["etc/shadow"][1:4] == [0o600, 0, 0]
    assert after["bin/su"][1] == 0o4711
    assert after["run.fifo"][0] == stat.S_IFIFO
    assert after["home/u/f"][2:4] == [user.uid, user.gid]
    assert "var/www" not in after and "old/b" not in after
    assert all(not n.startswith(".wh.") and "/.wh." not in n for n in after)
    # deletions are recorded in a form an unprivileged writer can make (0/0 devices where the kernel allows
    # them to users, else OCI .wh. files), never by losing the lower file
    recorded = upper_snapshot(up)
    assert recorded["old/b"] == ("whiteout",) and recorded["var/www"] == ("whiteout",)
    assert (layers[2] / "var" / "www" / "index.html").read_text() == "<h1>hi</h1>\n"
    # as root, with our filesystem, the same view
    with UnionMount(workspace / "rootmnt", layers, up, work) as m:
        as_root = json.loads(json.dumps({k: list(v) for k, v in snapshot(m).items()}, default=list))
    assert as_root == after
    # and fuse-overlayfs, another reader of these forms, sees it too with our upper as its top lower layer
    if shutil.which("fuse-overlayfs"):
        fo = workspace / "fomnt"
        for d in ("fo", "fomnt", "foup", "fowork"):
            (workspace / d).mkdir()
        lowers = ":".join(map(str, [up, *layers]))
        subprocess.run(
            [
                "fuse-overlayfs",
                "-o",
                f"lowerdir={lowers},upperdir={workspace / 'foup'},workdir={workspace / 'fowork'}",
                str(fo),
            ],
            check=True,
            capture_output=True,
        )
        try:
            theirs = json.loads(json.dumps({k: list(v) for k, v in snapshot(fo).items()}, default=list))
        finally:
            subprocess.run(["fusermount3", "-u", str(fo)], capture_output=True)
        for desc in theirs.values():  # fuse-overlayfs lists the record itself; we keep it internal
            if len(desc) > 4 and isinstance(desc[4], list):
                desc[4] = [x for x in desc[4] if x[0] != OVERRIDE_STAT]
        assert theirs == after


def as_rootless_extraction(layers: list[Path], uid: int, gid: int) -> None:
    """Store a root-made tree the way a rootless extraction does: the user owns every file on disk and the
    image's owners, modes and devices live in override_stat records."""
    for layer in layers:
        for dirpath, dirs, files in os.walk(layer):
            for name in [*dirs, *files, ""] if dirpath == str(layer) else [*dirs, *files]:
                path = os.path.join(dirpath, name) if name else dirpath
                st = os.lstat(path)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev != 0:
                    os.unlink(path)
                    Path(path).write_bytes(b"")
                record = OverrideStat(st.st_uid, st.st_gid, st.st_mode, st.st_rdev)
                if stat.S_ISREG(os.lstat(path).st_mode) or stat.S_ISDIR(st.st_mode):
                    os.setxattr(path, OVERRIDE_STAT, record.encode())
                if not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
                    os.lchown(path, uid, gid)


def test_the_same_inside_a_user_namespace(user: User, setup) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    layers, up, work, mnt = setup
    probe = user.run("unshare", "-rm", "true", check=False)
    if probe.returncode != 0:
        pytest.skip(f"unprivileged user namespaces are not available here: {probe.stderr.strip()}")
    as_rootless_extraction(layers, user.uid, user.gid)
    options = "lowerdir=" + ":".join(map(str, layers)) + f",upperdir={up},workdir={work}"
    script = f"""
set -e
{user.python} -m unionfs mount -o {options} {mnt}
cd {mnt}
stat -c '%n %u:%g %a %F %t:%T' bin/su null
echo more >> etc/passwd
chmod 600 etc/shadow
echo mine > new-file
rm old/a 2>/dev/null || true
rm etc/hostname
cd /
{user.python} -m tests.rootless.snap {mnt}
{user.python} -m unionfs umount {mnt}
"""
    done = user.run("unshare", "-rm", "sh", "-c", script)
    lines = done.stdout.splitlines()
    assert lines[0] == "bin/su 0:0 4755 regular file 0:0"  # the image's root is the namespace's root
    assert lines[1] == "null 0:0 666 character special file 1:3"  # a device recorded on a placeholder
    inside = json.loads(lines[-1])
    assert inside["etc/shadow"][1:4] == [0o600, 0, 0] and "etc/hostname" not in inside
    assert inside["new-file"][2:4] == [0, 0]  # made by the namespace's root: recorded as root's
    with UnionMount(mnt.parent / "rootmnt", layers, up, work) as m:
        outside = json.loads(json.dumps({k: list(v) for k, v in snapshot(m).items()}, default=list))
    for name, desc in inside.items():  # uid 33 is unmapped inside: it shows as 65534 there
        if not name.startswith("var/www"):
            assert outside[name] == desc, name
    assert outside["var/www/index.html"][2:4] == [33, 33] and inside["var/www/index.html"][2:4] == [65534, 65534]


def test_squash_to_root_makes_a_root_owned_tree_usable_in_a_namespace(user: User, setup) -> None:
    layers, up, work, mnt = setup
    if user.run("unshare", "-rm", "true", check=False).returncode != 0:
        pytest.skip("unprivileged user namespaces are not available here")
    options = "lowerdir=" + ":".join(map(str, layers)) + f",upperdir={up},workdir={work},squash_to_root"
    done = user.run(
        "unshare",
        "-rm",
        "sh",
        "-c",
        f"""
set -e
{user.python} -m unionfs mount -o {options} {mnt}
stat -c '%u:%g' {mnt}/var/www/index.html
echo more >> {mnt}/etc/passwd && tail -1 {mnt}/etc/passwd
{user.python} -m unionfs umount {mnt}
""",
    )
    assert done.stdout.splitlines() == ["0:0", "more"]


def test_rootless_errors_say_what_to_do(user: User, setup) -> None:
    layers, up, work, mnt = setup
    fuse_conf = Path("/etc/fuse.conf")
    allowed = fuse_conf.exists() and any(
        line.strip() == "user_allow_other" for line in fuse_conf.read_text().splitlines()
    )
    if not allowed:
        done = user.unionfs("mount", "-o", f"lowerdir={layers[0]},allow_other", str(mnt), check=False)
        assert done.returncode == 2 and "user_allow_other" in done.stderr and "/etc/fuse.conf" in done.stderr
    os.chmod(up, 0o755)
    os.chown(up, 0, 0)
    done = user.unionfs("mount", "-o", f"lowerdir={layers[0]},upperdir={up},workdir={work}", str(mnt), check=False)
    assert done.returncode == 2 and "not writable by you" in done.stderr
    assert subprocess.run(["grep", "-q", str(mnt), "/proc/mounts"]).returncode != 0
    assert UNIONFS  # the CLI under test is the same module the user runs


@pytest.fixture
def user_allow_other() -> Iterator[None]:
    conf = Path("/etc/fuse.conf")
    before = conf.read_text() if conf.exists() else None
    conf.write_text((before or "") + "\nuser_allow_other\n")
    try:
        yield
    finally:
        if before is None:
            conf.unlink()
        else:
            conf.write_text(before)


@pytest.mark.usefixtures("user_allow_other")
def test_other_users_get_ordinary_checks_while_the_owner_is_root_of_its_mount(user: User, setup) -> None:
    layers, up, work, mnt = setup
    write(layers[2] / "private", "secret\n", 0o600)
    (layers[2] / "shared").mkdir(mode=0o777)
    os.chmod(layers[2] / "shared", 0o1777)
    mount_as_user(user, layers, up, work, mnt, "allow_other")
    nobody = User("nobody", 65534, 65534, user.python, user.pythonpath, user.base)
    try:
        # the mounting user: fakeroot powers over root-owned files
        user.run("sh", "-c", f"echo owner >> {mnt}/etc/passwd && chmod 000 {mnt}/etc/hostname")
        checks = f"""
cd {mnt}
cat etc/passwd >/dev/null && echo read-ok
echo x >> etc/passwd 2>/dev/null && echo write-passwd
cat private >/dev/null 2>&1 && echo read-private
cat etc/hostname >/dev/null 2>&1 && echo read-hostname
touch newfile 2>/dev/null && echo create-root-dir
touch shared/mine && echo create-shared
rm -f opt/app 2>/dev/null && echo delete-root
"""
        out = nobody.run("sh", "-c", checks, check=False).stdout.split()
    finally:
        user.unionfs("umount", str(mnt), check=False)
    assert out == ["read-ok", "create-shared"]
