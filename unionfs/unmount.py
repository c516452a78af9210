"""Unmount a FUSE mount with the tools the system has: fusermount3 first, then util-linux's umount.

fusermount3 (3.14) reads /etc/mtab for every unmount by an ordinary user and fails where there is none, as in
many containers and fresh Debian trees. util-linux's setuid umount lets an ordinary user unmount a FUSE mount
whose `user_id=` is theirs, reading only /proc/self/mountinfo. No printing here: a failure raises UnmountError
with a one-line reason.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import threading

from .errors import UnmountError as UnmountError  # (re-exported: callers import it from here)

TOOL_TIMEOUT = 30.0
BUSY = ("Device or resource busy", "target is busy")  # what fusermount3 and umount say for EBUSY (LC_ALL=C)


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def top_mount(point: str) -> int | None:
    """The id of the mount a path lookup of `point` reaches (the last one mounted there), or None."""
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split(" ")
            if _unescape(fields[4]) == point:
                found = int(fields[0])
    return found


def is_dead(point: str, timeout: float = 5.0) -> bool:
    """True for a FUSE mount whose daemon is gone. statfs is asked, as the kernel answers it from no cache (a
    stat of the root may be); a daemon that does not answer within `timeout` counts as alive."""
    dead: list[bool] = []

    def probe() -> None:
        try:
            os.statvfs(point)
        except OSError as exc:
            dead.append(exc.errno == errno.ENOTCONN)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return any(dead)


def _tool(name: str) -> str | None:
    """The tool on PATH, or where Debian and most distributions install it (a daemon's PATH may be bare)."""
    found = shutil.which(name)
    if found is None:
        for directory in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
            candidate = os.path.join(directory, name)
            if os.access(candidate, os.X_OK):
                return candidate
    return found


def _attempt(command: list[str], said: list[str]) -> bool:
    """Run one unmount command; True when it worked, else what it said is added to `said`."""
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            env={**os.environ, "LC_ALL": "C"},
            timeout=TOOL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        message = f"{os.path.basename(command[0])} did not finish in {TOOL_TIMEOUT:g}s"
    else:
        if done.returncode == 0:
            return True
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        message = lines[0] if lines else f"{os.path.basename(command[0])} exited with status {done.returncode}"
    if message not in said:
        said.append(message)
    return False


def unmount(point: str, lazy: bool = False) -> None:
    """Unmount the mount at `point` (an absolute path without symlinks): fusermount3, then util-linux's umount,
    then, for a dead mount (its daemon gone), the lazy forms of both. `lazy` goes to the lazy forms at once:
    they detach the mount even while it is in use, for a mount whose daemon is gone or going."""
    fusermount = _tool("fusermount3") or _tool("fusermount")
    umount = _tool("umount")
    if fusermount is None and umount is None:
        raise UnmountError(f"cannot unmount '{point}': neither fusermount3 nor umount is installed")
    said: list[str] = []
    plain = [[fusermount, "-u", point]] if fusermount else []
    plain += [[umount, point]] if umount else []
    detach = [[fusermount, "-uz", point]] if fusermount else []
    detach += [[umount, "-l", point]] if umount else []
    if not lazy:
        if any(_attempt(command, said) for command in plain):
            return
        if not is_dead(point):
            detach = []
    if any(_attempt(command, said) for command in detach):
        return
    if any(busy in message.replace(point, "") for message in said for busy in BUSY):
        raise UnmountError(f"'{point}' is busy: close what uses it (fuser -vm {point})")
    raise UnmountError(f"cannot unmount '{point}': {'; '.join(said)}")
