"""POSIX ACLs on an ordinary user's mount: the same commands give the same modes and ACLs as in a plain
directory of the user's on ext4, before and after a remount; the upper keeps the ACLs as records
(`user.containers.override_system.posix_acl_*`, unionfs.privxattr), never as real ACLs on its files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.rootless.conftest import User, own_tree
from tests.rootless.test_rootless import mount_as_user, user_allow_other  # noqa: F401 (a fixture used here)
from tests.support import write

pytestmark = pytest.mark.skipif(shutil.which("setfacl") is None, reason="setfacl (Debian: acl) is not installed")

STEPS = """
set -e
umask 022
cp -p in out
setfacl -m u:1234:rwx,g:2345:r f
setfacl -m u:1234:rwx g
setfacl -b g
setfacl -m u:1234:rwx h
chmod 0750 h
setfacl -d -m u:1234:rwx,g:2345:rx d
echo x > d/file
mkdir d/sub d/sub/deeper
touch k
chmod 0640 k
"""
NAMES = ["out", "f", "g", "h", "d", "d/file", "d/sub", "d/sub/deeper", "k"]
LOWER = {"in": 0o644, "f": 0o640, "h": 0o640, "k": 0o600}
#: an ACL file k has before the steps: a real one in the lower layer, whose copy-up keeps it as a record
K_ACL = "u:1234:rw,g:2345:r"
UPPER = {"out": 0o600, "g": 0o600}
NOBODY = 65534  # uid and gid of the second user, as test_rootless has it


def observe(user: User, root: Path) -> str:
    """Every name's mode (`stat -c %a`, which asks for the mode alone), ACL and xattr names, as the user sees."""
    script = "cd " + str(root) + "\nfor name in " + " ".join(NAMES) + "; do\n"
    script += "stat -c '%n %a' $name; getfacl --omit-header --numeric $name; getfattr --absolute-names -m - $name\n"
    script += "done\n"
    return user.run("sh", "-c", script).stdout


def tree(root: Path, files: dict[str, int], owner: User) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, mode in files.items():
        write(root / name, name, mode)
        os.chmod(root / name, mode)
    (root / "d").mkdir(exist_ok=True)
    for path in (root, *root.rglob("*")):
        os.chown(path, owner.uid, owner.gid)


def test_acls_on_a_rootless_mount_as_on_ext4(user: User, workspace: Path) -> None:
    plain = workspace / "plain"
    tree(plain, {**LOWER, **UPPER}, user)
    subprocess.run(["setfacl", "-m", K_ACL, plain / "k"], check=True)
    user.run("sh", "-c", f"cd {plain}\n{STEPS}")
    expected = observe(user, plain)

    lower, up, work = workspace / "lower", workspace / "upper", workspace / "work"
    # The user's own, as the plain directory's are: the kernel lets only a file's owner (as the mount shows it)
    # set its ACL, before it asks the filesystem (a RUN step's mount shows the image's root as the user).
    tree(lower, LOWER, user)
    subprocess.run(["setfacl", "-m", K_ACL, lower / "k"], check=True)
    tree(up, UPPER, user)
    (up / "d").rmdir()  # d is the lower layer's
    work.mkdir()
    os.chown(work, user.uid, user.gid)
    for n, point in enumerate((workspace / "mnt", workspace / "again")):
        point.mkdir()
        os.chown(point, user.uid, user.gid)
        mount_as_user(user, [lower], up, work, point)
        try:
            if n == 0:
                user.run("sh", "-c", f"cd {point}\n{STEPS}")
            assert observe(user, point) == expected
        finally:
            user.unionfs("umount", str(point))

    for name in ("f", "h", "d/file", "d/sub", "k"):
        kept = os.listxattr(up / name, follow_symlinks=False)
        assert "user.containers.override_system.posix_acl_access" in kept, name
        assert "system.posix_acl_access" not in kept and "system.posix_acl_default" not in kept, name
    for name in ("d", "d/sub", "d/sub/deeper"):
        assert "user.containers.override_system.posix_acl_default" in os.listxattr(up / name), name
    assert not any("posix_acl" in name for name in os.listxattr(up / "out") + os.listxattr(up / "g"))


def test_cp_p_in_a_run_steps_mount(user: User, workspace: Path) -> None:
    """readline-common's postinst, `cp -p /usr/share/readline/inputrc /etc/inputrc`, on a mount as a rootless RUN
    step makes it: the image's root shown as the user. The mode is kept for good (the ownership record)."""
    lower, up, work = workspace / "lower", workspace / "upper", workspace / "work"
    write(lower / "usr" / "share" / "readline" / "inputrc", "set bell-style none\n", 0o644)
    write(lower / "etc" / "inputrc", "old\n", 0o600)  # root's, as the image has them
    for path in (up, work):
        path.mkdir()
        os.chown(path, user.uid, user.gid)
    ids = (f"uidmapping=0:{user.uid}:1", f"gidmapping=0:{user.gid}:1")
    for n, point in enumerate((workspace / "mnt", workspace / "again")):
        point.mkdir()
        os.chown(point, user.uid, user.gid)
        mount_as_user(user, [lower], up, work, point, *ids)
        try:
            if n == 0:
                user.run("cp", "-p", str(point / "usr/share/readline/inputrc"), str(point / "etc/inputrc"))
            shown = user.run("stat", "-c", "%a %u", str(point / "etc/inputrc")).stdout.split()
            assert shown == ["644", str(user.uid)]
        finally:
            user.unionfs("umount", str(point))
    assert os.getxattr(up / "etc" / "inputrc", "user.containers.override_stat").startswith(b"0:0:0644")


def _mount_for_nobody(user: User, workspace: Path) -> tuple[Path, User]:
    """`user`'s allow_other mount of workspace/lower (a fresh upper), and `nobody`, the other user reading it."""
    up, work, mnt = workspace / "upper", workspace / "work", workspace / "mnt"
    for path in (up, work, mnt):
        path.mkdir()
        os.chown(path, user.uid, user.gid)
    mount_as_user(user, [workspace / "lower"], up, work, mnt, "allow_other")
    return mnt, User("nobody", NOBODY, NOBODY, user.python, user.pythonpath, user.base)


@pytest.mark.usefixtures("user_allow_other")
def test_other_users_of_an_allow_other_mount_get_what_the_acls_say(user: User, workspace: Path) -> None:
    """Unprivileged, the kernel leaves permission checks to the daemon (no default_permissions): another user
    reading through the mount is granted or refused by the ACL entries as on ext4, whether the ACL is a lower
    layer's real one or set through the mount (kept as a record)."""
    lower = workspace / "lower"
    tree(lower, {"granted": 0o600, "denied": 0o644, "by-group": 0o600, "lower-granted": 0o600}, user)
    (lower / "closed").mkdir()
    write(lower / "closed" / "inside", "x", 0o644)
    own_tree(lower, user)
    subprocess.run(["setfacl", "-m", f"u:{NOBODY}:r", lower / "lower-granted"], check=True)
    mnt, nobody = _mount_for_nobody(user, workspace)
    try:
        user.run(
            "sh",
            "-ec",
            f"cd {mnt}\nsetfacl -m u:{NOBODY}:r granted\nsetfacl -m u:{NOBODY}:- denied\n"
            f"setfacl -m g:{NOBODY}:r by-group\nsetfacl -m u:{NOBODY}:- closed\n",
        )
        checks = "".join(
            f"cat {mnt}/{name} >/dev/null 2>&1 && echo {name}\n"
            for name in ("granted", "denied", "by-group", "lower-granted", "closed/inside")
        )
        checks += f"ls {mnt}/closed >/dev/null 2>&1 && echo list-closed\n"
        out = nobody.run("sh", "-c", checks, check=False).stdout.split()
    finally:
        user.unionfs("umount", str(mnt), check=False)
    assert out == ["granted", "by-group", "lower-granted"], out


@pytest.mark.usefixtures("user_allow_other")
def test_another_user_clears_setgid_as_on_ext4(user: User, workspace: Path) -> None:
    """On an ordinary user's mount, another user outside a file's group clears its setgid bit by a chmod, an
    access ACL or a write, as on ext4 (the daemon does it: the kernel leaves it alone there)."""
    lower = workspace / "lower"
    lower.mkdir()
    for name, mode in (("chmod", 0o755), ("acl", 0o2644), ("append", 0o2666)):
        write(lower / name, name, mode)
        os.chown(lower / name, NOBODY, 4444)
        os.chmod(lower / name, mode)
    mnt, nobody = _mount_for_nobody(user, workspace)
    try:
        nobody.run("sh", "-ec", f"cd {mnt}\nchmod 2755 chmod\nsetfacl -m u:1234:r acl\necho x >> append\n")
        shown = {name: os.stat(mnt / name).st_mode & 0o7777 for name in ("chmod", "acl", "append")}
    finally:
        user.unionfs("umount", str(mnt), check=False)
    assert shown == {"chmod": 0o755, "acl": 0o644, "append": 0o666}
