"""Without /etc/mtab (many containers, fresh Debian trees) an ordinary user still unmounts: with `unionfs umount`,
by stopping the daemon, and through UnionMount from Python; nothing is left mounted or running afterwards.

fusermount3 reads /etc/mtab for every unmount by an ordinary user and fails where there is none. The tests take
it away only for themselves: each runs the user's commands in a private mount namespace where a copy of /etc
without mtab is bound over /etc (fusermount3 stays setuid there: no user namespace is involved). Mounts made in
that namespace never show outside it, and it goes away with its last process, mounts and all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rootless.conftest import User
from tests.support import wait_until, write
from unionfs.api import exited


class NoMtab:
    """A private mount namespace without /etc/mtab, kept alive by a holder process; commands run there as the
    user, with no privileges and no capabilities."""

    def __init__(self, user: User, etc: Path) -> None:
        self.user = user
        self.holder = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                f"mount --bind {etc} /etc && echo ready && exec sleep 3600",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "ready":
            self.holder.wait()
            assert self.holder.stderr is not None
            pytest.skip(f"cannot make a private mount namespace here: {self.holder.stderr.read().strip()}")
        self.namespace = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")

    def command(self, *args: str) -> list[str]:
        u = self.user
        return [
            "nsenter",
            f"--target={self.holder.pid}",
            "--mount",
            "--",
            "setpriv",
            f"--reuid={u.uid}",
            f"--regid={u.gid}",
            "--init-groups",
            "--inh-caps=-all",
            "--",
            *args,
        ]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=120, env=self.user.env(), cwd=self.user.base
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{args} failed ({done.returncode}): {done.stderr}")
        return done

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.user.env(),
            cwd=self.user.base,
            text=True,
        )

    def python(self, script: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.user.python, "-c", script, check=False)

    def mounted(self, point: Path) -> bool:
        with open(f"/proc/{self.holder.pid}/mountinfo") as info:
            return any(line.split(" ")[4] == str(point) for line in info)

    def processes(self) -> list[int]:
        """Every process in the namespace but the holder."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.holder.pid:
                try:
                    if os.readlink(f"/proc/{entry}/ns/mnt") == self.namespace:
                        found.append(int(entry))
                except OSError:
                    pass
        return found

    def close(self) -> None:
        """Kill whatever still runs in the namespace (daemons included): with its last process the namespace
        and every mount in it are gone."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not self.processes(), 20)
        self.holder.kill()
        self.holder.wait()


@pytest.fixture(scope="session")
def etc_without_mtab(user: User) -> Iterator[Path]:  # noqa: ARG001 (asked for so that the user exists first)
    """A copy of /etc (made after the test user exists) without mtab."""
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (util-linux) is not installed")
    base = Path(tempfile.mkdtemp(prefix="unionfs-etc-"))
    etc = base / "etc"
    try:
        subprocess.run(["cp", "-a", "/etc", str(etc)], check=True)
        (etc / "mtab").unlink(missing_ok=True)
        yield etc
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def nomtab(user: User, etc_without_mtab: Path) -> Iterator[NoMtab]:
    namespace = NoMtab(user, etc_without_mtab)
    try:
        assert namespace.run("sh", "-c", "test ! -e /etc/mtab", check=False).returncode == 0
        yield namespace
    finally:
        namespace.close()


@pytest.fixture
def dirs(user: User, workspace: Path) -> dict[str, Path]:
    write(workspace / "low" / "hello", "hello\n", 0o644)
    made = {"low": workspace / "low"}
    for name in ("up", "work", "mnt", "run"):
        made[name] = workspace / name
        made[name].mkdir()
        os.chown(made[name], user.uid, user.gid)
    return made


def mount(nomtab: NoMtab, dirs: dict[str, Path]) -> int:
    """Mount as the user in the namespace; returns the daemon's pid."""
    pidfile = dirs["run"] / "pid"
    options = f"lowerdir={dirs['low']},upperdir={dirs['up']},workdir={dirs['work']}"
    nomtab.run(nomtab.user.python, "-m", "unionfs", "mount", "-o", options, "--pidfile", str(pidfile), str(dirs["mnt"]))
    assert nomtab.mounted(dirs["mnt"])
    return int(pidfile.read_text())


def test_umount_works_without_mtab(nomtab: NoMtab, dirs: dict[str, Path]) -> None:
    mnt = dirs["mnt"]
    pid = mount(nomtab, dirs)
    nomtab.run("sh", "-c", f"echo written > {mnt}/new")
    failed = nomtab.run("fusermount3", "-u", str(mnt), check=False)  # what users met: fusermount3 alone fails
    assert failed.returncode != 0 and "/etc/mtab" in failed.stderr
    done = nomtab.run(nomtab.user.python, "-m", "unionfs", "umount", str(mnt), check=False)
    assert done.returncode == 0, done.stderr
    assert not nomtab.mounted(mnt)
    assert wait_until(lambda: exited(pid), 20)
    assert (dirs["up"] / "new").read_text() == "written\n"


def test_sigterm_unmounts_without_mtab(nomtab: NoMtab, dirs: dict[str, Path]) -> None:
    mnt = dirs["mnt"]
    pid = mount(nomtab, dirs)
    os.kill(pid, signal.SIGTERM)  # as a user's kill, or a shutdown, would (procps' kill is not on every machine)
    assert wait_until(lambda: exited(pid), 20)
    assert not nomtab.mounted(mnt)  # not a dead mount left behind


def test_union_mount_unmounts_and_reaps_without_mtab(nomtab: NoMtab, dirs: dict[str, Path]) -> None:
    mnt = dirs["mnt"]
    script = f"""
from unionfs.api import UnionMount
m = UnionMount({str(mnt)!r}, [{str(dirs["low"])!r}], {str(dirs["up"])!r}, {str(dirs["work"])!r}).mount()
print(m.pid, flush=True)
open({str(mnt / "new")!r}, "w").write("written")
m.unmount()
"""
    done = nomtab.python(script)
    pid = int(done.stdout.split()[0]) if done.stdout.strip() else None
    assert done.returncode == 0, done.stderr
    assert not nomtab.mounted(mnt)
    assert pid is not None and exited(pid)  # reaped before unmount() returned
    assert (dirs["up"] / "new").read_text() == "written"


def test_a_busy_mount_is_removed_and_its_daemon_stopped(nomtab: NoMtab, dirs: dict[str, Path]) -> None:
    """`imagebuild umount` knows only the mount point: when the unmount fails (here: something works in the
    mount), the daemon is found and killed, the dead mount detached, and the error says what was wrong."""
    mnt = dirs["mnt"]
    pid = mount(nomtab, dirs)
    busy = nomtab.spawn("sh", "-c", f"cd {mnt} && exec sleep 300")
    try:
        assert wait_until(lambda: os.readlink(f"/proc/{busy.pid}/cwd") == str(mnt), 20)
        script = f"""
from unionfs.api import MountError, UnionMount
try:
    UnionMount({str(mnt)!r}, ["/"]).unmount()
except MountError as exc:
    print(exc)
"""
        done = nomtab.python(script)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"'{mnt}' is busy: close what uses it (fuser -vm {mnt})"), done.stdout
        assert "/etc/mtab" not in done.stdout
        assert wait_until(lambda: exited(pid), 20)
        assert not nomtab.mounted(mnt)
    finally:
        busy.kill()
        busy.wait()
