"""Rootless RUN and `run` with every id of the container, as buildah and podman give it: a user namespace that maps
container ids 0..N onto the building user (0) and its subordinate ids from /etc/subuid and /etc/subgid (N is the
range's size), set up by newuidmap/newgidmap (Debian's `uidmap`), with a mount namespace of its own.

The unionfs daemon runs inside it as the namespace's root, without CAP_CHOWN: the mount is that namespace's, so
it may be `allow_other` without root's /etc/fuse.conf, every id of the namespace can use it, and requests arrive
with container ids. Unable to give files away, the daemon keeps what the container's ids own in its ownership
records, and the files on disk stay the user's: layers record container ids, as a root build does. The mount
lives only in that mount namespace; imagebuild reaches it through `enter`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass

from imagebuild.errors import BuildError

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
READY_WITHIN = 10.0  # seconds for `unshare` to make the namespaces


@dataclass(frozen=True)
class IdRange:
    start: int
    count: int


def subordinate(table: str, name: str, uid: int) -> IdRange | None:
    """The user's first range in /etc/subuid or /etc/subgid (`NAME:START:COUNT`, NAME or the numeric id)."""
    try:
        with open(table, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.strip().split(":")
        if (
            len(fields) == 3
            and fields[0] in (name, str(uid))
            and fields[1].isdigit()
            and fields[2].isdigit()
            and int(fields[2]) > 0
        ):
            return IdRange(int(fields[1]), int(fields[2]))
    return None


def user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def ranges() -> tuple[IdRange, IdRange] | None:
    """This user's subordinate uids and gids, or None when it has none (or the tools to map them are missing)."""
    if os.geteuid() == 0 or shutil.which("newuidmap") is None or shutil.which("newgidmap") is None:
        return None
    name = user_name()
    uids = subordinate(SUBUID, name, os.getuid())
    gids = subordinate(SUBGID, name, os.getuid())
    return None if uids is None or gids is None else (uids, gids)


def no_range_hint() -> str:
    name = user_name()
    return (
        f"as '{name}', without subordinate ids, a RUN has one id and cannot switch to another (su, apt's _apt): "
        f"give the user a range (as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}), "
        "as buildah and podman need"
    )


class Namespace:
    """The user and mount namespaces a rootless RUN or `run` uses, held by a process that lives while this object
    is open, or until this process is gone (it waits for the end of its stdin, a pipe only we write to)."""

    def __init__(self, uids: IdRange, gids: IdRange, net: bool = False) -> None:
        self.uids = uids
        self.gids = gids
        self.net = net  # a network namespace of the container's own too (network.py forwards its ports)
        self.holder: subprocess.Popen[bytes] | None = None

    def open(self) -> Namespace:
        own = os.readlink("/proc/self/ns/user")
        holder = subprocess.Popen(
            ["unshare", "--user", "--mount", *(["--net"] if self.net else []), "--", "cat"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.holder = holder
        try:
            deadline = time.monotonic() + READY_WITHIN
            while _namespace(holder.pid) in (own, None):
                if holder.poll() is not None or time.monotonic() > deadline:
                    error = holder.stderr.read().decode(errors="replace").strip() if holder.stderr else ""
                    raise BuildError(f"cannot make a user namespace for the container: {error or 'unshare failed'}")
                time.sleep(0.005)
            uid, gid = os.getuid(), os.getgid()
            for tool, host, sub in (("newuidmap", uid, self.uids), ("newgidmap", gid, self.gids)):
                done = subprocess.run(
                    [tool, str(holder.pid), "0", str(host), "1", "1", str(sub.start), str(sub.count)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode != 0:
                    raise BuildError(f"{tool} could not map the subordinate ids: {done.stderr.strip()}")
        except BaseException:
            self.close()
            raise
        return self

    def enter(self) -> list[str]:
        """A command prefix that runs a command in the namespaces, as their root (the user)."""
        assert self.holder is not None
        return ["nsenter", f"--target={self.holder.pid}", "--user", "--mount", *(["--net"] if self.net else []), "--"]

    def daemon(self) -> list[str]:
        """The prefix the unionfs daemon starts with: the namespace's root without CAP_CHOWN, so that it keeps what
        the container's ids own in records and the files on disk stay the user's."""
        return [*self.enter(), "setpriv", "--bounding-set=-chown", "--"]

    def read(self, path: str) -> str | None:
        done = subprocess.run([*self.enter(), "cat", "--", path], capture_output=True, check=False)
        return done.stdout.decode(errors="replace") if done.returncode == 0 else None

    def readlink(self, path: str) -> str | None:
        """A symlink's target in the namespace's view, or None when `path` is no symlink."""
        done = subprocess.run([*self.enter(), "readlink", "--", path], capture_output=True, check=False)
        return done.stdout.decode(errors="surrogateescape").rstrip("\n") if done.returncode == 0 else None

    def is_link(self, path: str) -> bool:
        return subprocess.run([*self.enter(), "test", "-L", path], capture_output=True, check=False).returncode == 0

    def create(self, *paths: str) -> None:
        """Empty files where there is nothing yet (a mountpoint for bubblewrap, which a USER could not make)."""
        script = 'for f; do [ -e "$f" ] || [ -L "$f" ] || : > "$f"; done'
        done = subprocess.run([*self.enter(), "sh", "-c", script, "sh", *paths], capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"cannot make {', '.join(paths)} in the container: {done.stderr.strip()}")

    def makedirs(self, *paths: str) -> None:
        done = subprocess.run([*self.enter(), "mkdir", "-p", "--", *paths], capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"cannot make {', '.join(paths)} in the container: {done.stderr.strip()}")

    def close(self) -> None:
        holder, self.holder = self.holder, None
        if holder is not None:
            release(holder, 5)


def release(holder: subprocess.Popen[bytes], within: float) -> None:
    """Let a namespace's holder go (it ends at the end of its stdin), killed if it has not within `within`
    seconds, and close our ends of its pipes: its namespaces are gone when this returns."""
    if holder.stdin is not None:
        with contextlib.suppress(OSError):
            holder.stdin.close()
    try:
        holder.wait(within)
    except subprocess.TimeoutExpired:
        holder.kill()
        holder.wait()
    for pipe in (holder.stdout, holder.stderr):
        if pipe is not None:
            pipe.close()


def _namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/user")
    except OSError:
        return None
