"""Rootless tests: a real ordinary user mounts, reads and writes; CI runs as root and drops privileges here.

The venv's interpreter may live where other users cannot reach it (e.g. under /root), so the user runs the
system's python3 of the same version on a world-readable copy of the packages the daemon needs.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "unionfs-test"
TUN = "/dev/net/tun"
RUNTIME = (
    "unionfs",
    "imagebuild",
    "pyfuse3",
    "trio",
    "attr",
    "attrs",
    "outcome",
    "sniffio",
    "sortedcontainers",
    "idna",
    "xxhash",
)


@dataclass
class User:
    name: str
    uid: int
    gid: int
    python: str
    pythonpath: str
    base: Path

    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.base),
            "PYTHONPATH": self.pythonpath,
            "LANG": "C.UTF-8",
        }

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a command as the user (no privileges, no capabilities)."""
        command = [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--init-groups",
            "--inh-caps=-all",
            "--",
            *args,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=self.env(), cwd=self.base)
        if check and done.returncode != 0:
            raise AssertionError(f"{args} failed ({done.returncode}): {done.stderr}")
        return done

    def unionfs(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(self.python, "-m", "unionfs", *args, check=check)

    def snapshot(self, root: Path, prefix: tuple[str, ...] = ()) -> dict[str, list[object]]:
        """The tree as the user sees it (only the user may enter its own mount)."""
        done = self.run(*prefix, self.python, "-m", "tests.rootless.snap", str(root))
        return json.loads(done.stdout)


def python_for_users() -> str | None:
    for candidate in (f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}", "/usr/bin/python3"):
        if os.path.exists(candidate):
            version = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
            ).stdout.strip()
            if version == str(tuple(sys.version_info[:2])):
                return candidate
    return None


def why_no_user() -> str | None:
    """Why an ordinary user cannot be made here, or None."""
    if os.geteuid() != 0:
        return "rootless tests create an ordinary user: run the suite as root (CI does)"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    if python_for_users() is None:
        return "no system python3 of this version for an ordinary user to run"
    return None


@contextlib.contextmanager
def ordinary_user() -> Iterator[User]:
    """The test user, made if missing, with a subordinate id range and a world-readable copy of the packages it
    runs (see why_no_user for what this needs)."""
    python = python_for_users()
    assert python is not None, why_no_user()
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
    give_subordinate_ids(USER)
    entry = pwd.getpwnam(USER)
    if not os.path.isdir(entry.pw_dir):  # buildah (Debian 13's) resolves the user's home from passwd
        os.makedirs(entry.pw_dir, 0o755)
        os.chown(entry.pw_dir, entry.pw_uid, entry.pw_gid)
    base = Path(tempfile.mkdtemp(prefix="unionfs-rootless-"))
    os.chmod(base, 0o755)
    site = base / "site"
    site.mkdir()
    for module in RUNTIME:
        spec_dir = next((Path(p) / module for p in sys.path if (Path(p) / module).is_dir()), None)
        if spec_dir is not None:
            shutil.copytree(spec_dir, site / module, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(Path(__file__).resolve().parents[1], site / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    fuse_mode = os.stat("/dev/fuse").st_mode
    os.chmod("/dev/fuse", 0o666)  # what a distribution sets up; some containers start with 0600
    tun_mode = os.stat(TUN).st_mode if os.path.exists(TUN) else None
    if tun_mode is not None:
        os.chmod(TUN, 0o666)  # Debian's udev makes it so; rootless pasta (run -p) opens it
    home = base / "home"
    home.mkdir()
    os.chown(home, entry.pw_uid, entry.pw_gid)
    try:
        yield User(USER, entry.pw_uid, entry.pw_gid, python, str(site), home)
    finally:
        os.chmod("/dev/fuse", fuse_mode & 0o7777)
        if tun_mode is not None:
            os.chmod(TUN, tun_mode & 0o7777)
        with contextlib.suppress(OSError):
            shutil.rmtree(base)


@pytest.fixture(scope="session")
def user() -> Iterator[User]:
    reason = why_no_user()
    if reason is not None:
        pytest.skip(reason)
    with ordinary_user() as made:
        yield made


def give_subordinate_ids(name: str, count: int = 65536) -> None:
    """A range of subordinate uids and gids, as useradd gives an ordinary (non-system) user: buildah and podman
    map a container's ids onto it."""
    for kind, table in (("uids", "/etc/subuid"), ("gids", "/etc/subgid")):
        lines = Path(table).read_text().splitlines() if os.path.exists(table) else []
        ranges = [line.split(":") for line in lines if line.count(":") == 2]
        if any(fields[0] == name for fields in ranges):
            continue
        start = max([100000, *(int(first) + int(size) for _, first, size in ranges)])
        subprocess.run(["usermod", f"--add-sub{kind}", f"{start}-{start + count - 1}", name], check=True)


@pytest.fixture
def workspace(user: User) -> Iterator[Path]:
    """A directory the user can reach; mounts made in it are cleaned up whatever happens."""
    path = Path(tempfile.mkdtemp(prefix="ws-", dir=user.base))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        with open("/proc/self/mountinfo") as info:
            points = [line.split(" ")[4] for line in info]
        for point in points:
            if point.startswith(str(path)):
                subprocess.run(["fusermount3", "-uz", point], capture_output=True)
                subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def own_tree(path: Path, user: User) -> None:
    """Give `path` and everything in it to `user`."""
    for dirpath, _dirs, files in os.walk(path):
        os.chown(dirpath, user.uid, user.gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), user.uid, user.gid)


def busybox_context(workspace: Path, busybox: str) -> Path:
    """The bundled busybox base's build context (examples/busybox with the host's static busybox), in `workspace`."""
    base = workspace / "busybox"
    base.mkdir()
    shutil.copy(Path(__file__).resolve().parents[2] / "examples" / "busybox" / "Dockerfile", base / "Dockerfile")
    shutil.copy(busybox, base / "busybox")
    return base


def group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name
