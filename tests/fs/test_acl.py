"""POSIX ACLs through the mount give what they give on ext4: each case runs the same commands in a plain
directory and in the mount (its files split between a lower layer and the upper) and compares modes, getfacl
output and the xattrs listed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fs.conftest import Mounter

pytestmark = pytest.mark.skipif(shutil.which("setfacl") is None, reason="setfacl (Debian: acl) is not installed")

#: name -> (mode, content) of files in the lower layer and in the upper (the plain directory gets both)
Files = dict[str, int]
Step = Callable[[Path], None]


def run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, env={**os.environ})


def observe(root: Path, names: list[str]) -> dict[str, tuple[str, str, list[str]]]:
    """Per name: the mode as `stat -c %a` shows it (which asks the kernel for the mode alone: a mode the kernel
    still holds from before shows there), getfacl's answer and the xattrs listed."""
    seen = {}
    for name in names:
        path = root / name
        mode = subprocess.run(["stat", "-c", "%a", str(path)], check=True, capture_output=True, text=True).stdout
        facl = subprocess.run(
            ["getfacl", "--omit-header", "--numeric", str(path)], check=True, capture_output=True, text=True
        ).stdout
        seen[name] = (mode.strip(), facl, sorted(os.listxattr(path, follow_symlinks=False)))
    return seen


def make(root: Path, files: Files) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, mode in files.items():
        path = root / name
        if name.endswith("/"):
            path.mkdir()
        else:
            path.write_text(name)
        os.chmod(path, mode)


def compare(
    mounter: Mounter,
    tmp_path: Path,
    lower: Files,
    upper: Files,
    steps: list[Step],
    names: list[str],
    remount: bool = True,
    options: tuple[str, ...] = (),
    prepare: Step | None = None,
) -> None:
    """The steps in a plain directory and in the mount; what `names` show must be the same in both, and in
    the mount again after a remount."""
    old_umask = os.umask(0o022)
    try:
        plain = tmp_path / "plain"
        make(plain, {**lower, **upper})
        if prepare is not None:
            prepare(plain)
        for step in steps:
            step(plain)
        expected = observe(plain, names)
        make(tmp_path / "lower", lower)
        if prepare is not None:
            prepare(tmp_path / "lower")
        make(tmp_path / "upper", upper)
        (tmp_path / "work").mkdir()
        mount = mounter([tmp_path / "lower"], tmp_path / "upper", tmp_path / "work", options)
        for step in steps:
            step(mount.mountpoint)
        assert observe(mount.mountpoint, names) == expected
        if remount:
            mount.close()
            mount = mounter([tmp_path / "lower"], tmp_path / "upper", tmp_path / "work", name="again")
            assert observe(mount.mountpoint, names) == expected
    finally:
        os.umask(old_umask)


def test_cp_p_sets_the_mode_of_an_upper_file(mounter: Mounter, tmp_path: Path) -> None:
    # readline-common's postinst: `cp -p /usr/share/readline/inputrc /etc/inputrc` over a 0600 file
    compare(mounter, tmp_path, {"in": 0o644}, {"out": 0o600}, [lambda d: run("cp", "-p", d / "in", d / "out")], ["out"])


def test_cp_p_sets_the_mode_of_a_lower_file(mounter: Mounter, tmp_path: Path) -> None:
    compare(
        mounter, tmp_path, {"in": 0o755, "out": 0o600}, {}, [lambda d: run("cp", "-p", d / "in", d / "out")], ["out"]
    )


def test_extended_acl_is_kept_and_the_mode_shows_its_mask(mounter: Mounter, tmp_path: Path) -> None:
    steps: list[Step] = [lambda d: run("setfacl", "-m", "u:1234:rwx,g:2345:r", d / "f", d / "g")]
    compare(mounter, tmp_path, {"f": 0o640}, {"g": 0o600}, steps, ["f", "g"])


def test_removing_an_extended_acl_leaves_the_mode(mounter: Mounter, tmp_path: Path) -> None:
    steps: list[Step] = [
        lambda d: run("setfacl", "-m", "u:1234:rwx", d / "f", d / "g"),
        lambda d: run("setfacl", "-b", d / "f"),
        lambda d: run("setfacl", "-x", "u:1234", d / "g"),
    ]
    compare(mounter, tmp_path, {"f": 0o640}, {"g": 0o600}, steps, ["f", "g"])


def test_chmod_after_an_extended_acl_moves_the_mask(mounter: Mounter, tmp_path: Path) -> None:
    steps: list[Step] = [
        lambda d: run("setfacl", "-m", "u:1234:rwx", d / "f", d / "g"),
        lambda d: run("chmod", "0750", d / "f"),
        lambda d: run("chmod", "0604", d / "g"),
        lambda d: run("setfacl", "-n", "-m", "g:77:r", d / "f", d / "g"),  # -n: the mask stays as chmod left it
    ]
    compare(mounter, tmp_path, {"f": 0o640}, {"g": 0o600}, steps, ["f", "g"])


def test_default_acl_is_inherited(mounter: Mounter, tmp_path: Path) -> None:
    def create(d: Path) -> None:
        for top in ("low/", "up/"):
            (d / top / "file").write_text("x")
            (d / top / "sub").mkdir()
            (d / top / "sub" / "deeper").mkdir()
            os.close(os.open(d / top / "private", os.O_CREAT | os.O_WRONLY, 0o600))
            os.mkfifo(d / top / "fifo", 0o640)

    steps: list[Step] = [
        lambda d: run("setfacl", "-d", "-m", "u:1234:rwx,g:2345:rx", d / "low", d / "up"),
        create,
    ]
    names = [f"{top}{name}" for top in ("low/", "up/") for name in ("", "file", "sub", "sub/deeper", "private")]
    compare(mounter, tmp_path, {"low/": 0o755}, {"up/": 0o750}, steps, names)


def test_minimal_default_acl_is_kept(mounter: Mounter, tmp_path: Path) -> None:
    steps: list[Step] = [
        lambda d: run("setfacl", "-d", "-m", "u::rwx,g::r-x,o::---", d / "dir"),
        lambda d: (d / "dir" / "file").write_text("x"),
    ]
    compare(mounter, tmp_path, {"dir/": 0o755}, {}, steps, ["dir", "dir/file"])


def test_a_named_user_gets_what_the_acl_grants(mounter: Mounter, tmp_path: Path) -> None:
    def read_as(uid: int, path: Path) -> bool:
        """Whether uid (with gid `uid`, no other groups) may open `path` (reached through an fd of its
        directory: the test's directories above it are root's alone)."""
        dirfd = os.open(path.parent, os.O_PATH)
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                os.close(os.open(path.name, os.O_RDONLY, dir_fd=dirfd))
                os._exit(0)
            except BaseException:  # noqa: BLE001 (the forked child never returns into pytest)
                os._exit(1)
        os.close(dirfd)
        return os.waitpid(pid, 0)[1] == 0

    def grant(d: Path) -> None:
        run("setfacl", "-m", "u:1234:r", d / "f")
        run("setfacl", "-m", "g:2345:r", d / "g")

    compare(mounter, tmp_path, {"f": 0o600}, {"g": 0o600}, [grant], ["f", "g"], False, ("allow_other",))
    for root in (tmp_path / "plain", tmp_path / "mnt"):
        assert read_as(1234, root / "f") and not read_as(1234, root / "g"), root
        assert read_as(2345, root / "g") and not read_as(2345, root / "f"), root


def test_acls_of_the_mount_root(mounter: Mounter, tmp_path: Path) -> None:
    steps: list[Step] = [
        lambda d: run("setfacl", "-m", "u:1234:rx", "-d", "-m", "u:1234:rwx", d),
        lambda d: (d / "new").write_text("x"),
    ]
    compare(mounter, tmp_path, {}, {}, steps, ["", "new"])


def test_copy_up_keeps_the_acls_a_lower_layer_has(mounter: Mounter, tmp_path: Path) -> None:
    def prepare(d: Path) -> None:
        run("setfacl", "-m", "u:1234:rw,g:2345:r", d / "f", d / "g")
        run("setfacl", "-d", "-m", "u:1234:rwx", d / "dir")

    steps: list[Step] = [
        lambda d: run("touch", d / "f"),  # a copy-up of metadata
        lambda d: run("chmod", "0640", d / "g"),
        lambda d: (d / "dir" / "new").write_text("x"),  # a copy-up of the directory, then a create in it
    ]
    lower = {"f": 0o600, "g": 0o644, "dir/": 0o755}
    compare(mounter, tmp_path, lower, {}, steps, ["f", "g", "dir", "dir/new"], prepare=prepare)
