"""Helpers for `imagebuild run` tests, as root and as an ordinary user: a page fetched with urllib, what is left
running afterwards, and a command run on a real pseudo-terminal (python's pty module)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import socket
import struct
import subprocess
import termios
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from unionfs.api import exited

GONE_WITHIN = 20.0  # seconds for the daemon, pasta and the namespaces to go once the container has (under load)


def fetch(url: str, within: float = 90.0, process: subprocess.Popen[bytes] | None = None) -> str:
    """The page at `url`, retried until it answers (the container is starting) or `within` passes."""
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as answer:
                return str(answer.read().decode())
        except OSError as exc:
            if process is not None and process.poll() is not None:
                said = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise AssertionError(f"{url}: {exc}; the container ended ({process.returncode}): {said}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(port: int) -> bool:
    """Whether anything listens on TCP `port` on the host (any address)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    return True
    return False


def processes(word: str) -> list[int]:
    """Running processes (not zombies) whose command line mentions `word`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace")
        except OSError:
            continue
        if word in argv and not exited(int(entry)):
            found.append(int(entry))
    return found


def pastas() -> set[int]:
    return {pid for pid in processes("pasta") if _comm(pid).startswith("pasta") or _comm(pid).startswith("passt")}


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def leftovers(store: Path, pastas_before: set[int], port: int | None = None) -> list[str]:
    """What a finished run left: its store's daemons, a pasta started since, a listener on its port."""
    found = [f"daemon {pid}" for pid in processes(str(store))]
    found += [f"pasta {pid}" for pid in pastas() - pastas_before]
    if port is not None and listening(port):
        found.append(f"a listener on port {port}")
    return found


def wait_for_nothing_left(store: Path, pastas_before: set[int], port: int | None = None) -> list[str]:
    deadline = time.monotonic() + GONE_WITHIN
    while (left := leftovers(store, pastas_before, port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def on_terminal(
    argv: Sequence[str], script: bytes, rows: int, cols: int, env: dict[str, str], cwd: str | None = None
) -> tuple[str, int]:
    """Run `argv` with a pseudo-terminal of `rows` x `cols` as its stdin, stdout and stderr (and controlling
    terminal), type `script` once it has started, and return what the terminal showed and the exit status."""
    outside, inside = pty.openpty()
    fcntl.ioctl(inside, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def session() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    child = subprocess.Popen(
        list(argv), stdin=inside, stdout=inside, stderr=inside, preexec_fn=session, env=env, cwd=cwd
    )
    os.close(inside)
    shown = b""
    typed = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([outside], [], [], 0.2)
            if ready:
                try:
                    data = os.read(outside, 4096)
                except OSError:
                    break
                if not data:
                    break
                shown += data
            if not typed and (b"# " in shown or b"$ " in shown):  # the shell's prompt
                os.write(outside, script)
                typed = True
            if child.poll() is not None and not ready:
                break
        return shown.decode(errors="replace"), child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(outside)
