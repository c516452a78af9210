"""The public Python API other programs (imagebuild) use to mount and unmount: the CLI in a subprocess.

The daemon runs in its own process, exactly as a user's `unionfs mount` does, so callers never import pyfuse3
and a crash of the filesystem never takes the caller down. Nor does a mount outlive its caller: unless asked
otherwise, the daemon watches a pipe only the calling process holds the write end of (`--owner-fd`) and unmounts
when that process is gone, however it ended (SIGKILL and the OOM killer included).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO

from .config import mounted_points, split_escaped, split_escaped_keep, unescape
from .errorlog import read_records
from .errors import MountError as MountError  # (re-exported: callers import it from here)
from .errors import UnmountError
from .unmount import unmount


def _escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


_owner_lock = threading.Lock()
_owner_pipe: tuple[int, int] | None = None  # (read end, write end) of this process's owner pipe


def owner_fd() -> int:
    """The read end of this process's owner pipe, made on first use and kept open for the life of the process.
    Its write end stays here alone: both ends are close-on-exec, so no command this process runs holds it, and a
    child forked without exec drops it (below). Every daemon given the read end unmounts once this process is
    gone."""
    global _owner_pipe
    with _owner_lock:
        if _owner_pipe is None:
            _owner_pipe = os.pipe()
        return _owner_pipe[0]


def _drop_owner_pipe() -> None:
    """In a child forked without exec: the parent's mounts are the parent's, the child must not keep them up."""
    global _owner_pipe
    if _owner_pipe is not None:
        for fd in _owner_pipe:
            with contextlib.suppress(OSError):
                os.close(fd)
        _owner_pipe = None


os.register_at_fork(after_in_child=_drop_owner_pipe)


class UnionMount:
    """A running union mount: `lowers` top first, an optional `upper`/`work` pair for writes. `owned` (the default)
    ties the mount to this process: its daemon unmounts when this process is gone, however it ends. A mount meant
    to outlive the process (the user unmounts it later) is made with `owned=False`. `enter`, when given, is a
    command prefix that runs a command in the namespaces the mount is to live in (`nsenter ... --`): the daemon
    starts and the unmount runs there, since the mount is not in this process's view."""

    def __init__(
        self,
        mountpoint: str,
        lowers: Sequence[str],
        upper: str | None = None,
        work: str | None = None,
        options: Sequence[str] = (),
        owned: bool = True,
        enter: Sequence[str] = (),
    ) -> None:
        self.mountpoint = os.path.realpath(mountpoint)
        option = "lowerdir=" + ":".join(_escape(os.fspath(p)) for p in lowers)
        if upper is not None and work is not None:
            option += f",upperdir={_escape(upper)},workdir={_escape(work)}"
        self.options = ",".join([option, *options])
        self.owned = owned
        self.enter = list(enter)
        self.pid: int | None = None
        self._records: IO[bytes] | None = None  # an unnamed file the daemon records its EIO answers in
        self._errors: list[str] = []

    def mount(self) -> UnionMount:
        with tempfile.TemporaryDirectory(prefix="unionfs-") as tmp:
            pidfile = os.path.join(tmp, "pid")
            command = [sys.executable, "-m", "unionfs", "mount", "-o", self.options, "--pidfile", pidfile]
            # (unnamed: it goes when the last process holding it does, whatever becomes of this one)
            self._records = tempfile.TemporaryFile()  # noqa: SIM115 (held until unmount: _drop_records closes it)
            command += ["--error-fd", str(self._records.fileno())]
            fds: tuple[int, ...] = (self._records.fileno(),)
            if self.owned:
                fds += (owner_fd(),)
                command += ["--owner-fd", str(fds[-1])]
            done = subprocess.run(
                [*self.enter, *command, self.mountpoint],
                capture_output=True,
                text=True,
                check=False,
                pass_fds=fds,
            )
            if done.returncode != 0:
                self._drop_records()
                raise MountError(done.stderr.strip().removeprefix("unionfs: error: "))
            with open(pidfile, encoding="utf-8") as f:
                self.pid = int(f.read())
        return self

    def unmount(self, timeout: float = 30.0) -> None:
        """Unmount and wait for the daemon to exit (killing it if it will not). Whatever happens, neither the
        mount nor the daemon is left: when the unmount fails, the daemon is killed and its dead mount detached,
        and MountError says why the unmount failed."""
        try:
            try:
                if self.enter:
                    self._unmount_inside()
                elif self.mountpoint in mounted_points():
                    unmount(self.mountpoint)
            except UnmountError as exc:
                self._remove_by_force(str(exc))
            if self.pid is not None:
                reap(self.pid, timeout)
                self.pid = None
        finally:
            self._drop_records()

    def io_errors(self) -> list[str]:
        """The requests this mount's daemon answered EIO because of a bug of its own (an unexpected exception in
        a handler), one line each: when, which request, what went wrong. Empty while none has. What a process
        saw as EIO is not the filesystem's answer to its request but a failure, so a caller that keeps what was
        written through the mount (a build committing a layer) should not trust it. Still readable after
        unmount."""
        if self._records is not None:
            self._errors = read_records(self._records.fileno())
        return list(self._errors)

    def _drop_records(self) -> None:
        """Keep what the daemon recorded (io_errors) and close the file."""
        if self._records is not None:
            self.io_errors()
            self._records.close()
            self._records = None

    def _unmount_inside(self) -> None:
        if self.pid is not None and exited(self.pid):
            return  # its namespace, and the mount with it, is gone
        done = subprocess.run([*self.enter, "umount", self.mountpoint], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise UnmountError(done.stderr.strip() or f"umount {self.mountpoint} failed")

    def _remove_by_force(self, reason: str) -> None:
        pids = [self.pid] if self.pid is not None else daemon_pids(self.mountpoint)
        for pid in pids:
            kill(pid)
        self.pid = None
        if self.mountpoint in mounted_points():
            try:
                unmount(self.mountpoint, lazy=True)
            except UnmountError as exc:
                raise MountError(f"{reason}; detaching it failed too: {exc}") from None
        raise MountError(f"{reason}; its daemon was stopped and the mount detached")

    def __enter__(self) -> UnionMount:
        return self.mount()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.unmount()


def exited(pid: int) -> bool:
    """The process has exited: it is no more, or a zombie, which holds no file or mount any longer (its
    parent, usually init since the daemon runs in a session of its own, may reap it seconds later)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not exited(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def reap(pid: int, timeout: float = 10.0) -> None:
    """Wait for a daemon to exit after its unmount; kill it if it does not."""
    if not _wait_gone(pid, timeout):
        kill(pid)


def kill(pid: int, timeout: float = 10.0) -> None:
    """Kill a daemon and wait until it is gone: its mount, if any is left, is dead from then on."""
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    _wait_gone(pid, timeout)


def daemon_pids(mountpoint: str) -> list[int]:
    """The daemons serving `mountpoint` (an absolute path without symlinks), found by their command lines
    (`python -m unionfs ... MOUNTPOINT` or `unionfs ... MOUNTPOINT`), for a caller that does not know the pid."""
    return [daemon.pid for daemon in daemons() if daemon.mountpoint == mountpoint]


@dataclass(frozen=True)
class Daemon:
    """A `unionfs mount` process as its command line describes it (every path absolute, without symlinks in its
    directories). `serving`: it serves the mount itself (`-f`, as every background daemon runs), rather than
    being the command that starts one. `owner_fd`: the fd of its owner pipe, None for a mount with no owner."""

    pid: int
    mountpoint: str
    lowers: tuple[str, ...]
    upper: str | None
    work: str | None
    owner_fd: int | None
    serving: bool

    @property
    def dirs(self) -> tuple[str, ...]:
        return tuple(d for d in (*self.lowers, self.upper, self.work) if d is not None)


def _resolve(cwd: str, path: str) -> str:
    """`path` made absolute from `cwd`, its directory's symlinks resolved, its last name not (so a path lookup
    never enters a mount that may hang)."""
    given = os.path.normpath(os.path.join(cwd, path))
    return os.path.join(os.path.realpath(os.path.dirname(given)), os.path.basename(given))


def _parse_daemon(pid: int, argv: list[str], cwd: str) -> Daemon | None:
    """A daemon's command line, read as `unionfs mount` reads it, or None when it is not one."""
    if argv[1:3] == ["-m", "unionfs"]:
        rest = argv[3:]
    elif len(argv) > 1 and os.path.basename(argv[1]) == "unionfs":
        rest = argv[2:]
    else:
        return None
    if rest[:1] == ["mount"]:
        rest = rest[1:]
    if not rest or rest[0] in ("umount", "unmount", "stress"):
        return None
    lowers: list[str] = []
    upper: str | None = None
    work: str | None = None
    owner: int | None = None
    serving = False
    valued = (
        *("-o", "--lower", "--upper", "--work", "--owner-fd", "--log", "--pidfile", "--ready-fd"),
        *("--error-file", "--error-fd"),
    )
    i = 0
    while i < len(rest) - 1:
        arg = rest[i]
        name, eq, value = arg.partition("=")
        if name in valued and not eq:
            i += 1
            value = rest[i]
        elif arg.startswith("-o") and arg != "-o":
            name, value = "-o", arg[2:]
        i += 1
        if name == "-o":
            for item in split_escaped_keep(value, ","):
                key, _, text = item.partition("=")
                if key == "lowerdir":
                    lowers += [d for d in split_escaped(text, ":") if d]
                elif key == "upperdir":
                    upper = unescape(text)
                elif key == "workdir":
                    work = unescape(text)
        elif name == "--lower":
            lowers.append(value)
        elif name == "--upper":
            upper = value
        elif name == "--work":
            work = value
        elif name == "--owner-fd" and value.isdigit():
            owner = int(value)
        serving = serving or name in ("-f", "--foreground", "-d", "--debug", "--ready-fd")
    return Daemon(
        pid,
        _resolve(cwd, rest[-1]),
        tuple(_resolve(cwd, p) for p in lowers),
        _resolve(cwd, upper) if upper else None,
        _resolve(cwd, work) if work else None,
        owner,
        serving,
    )


def processes() -> Iterator[tuple[int, list[str]]]:
    """The pid and command line of every process this user may inspect, other than this one."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                yield int(entry), [os.fsdecode(a) for a in f.read().split(b"\0")[:-1]]
        except OSError:
            continue


def daemons() -> list[Daemon]:
    """Every `unionfs mount` process this user may inspect (other than this process)."""
    found = []
    for pid, argv in processes():
        if len(argv) < 3:
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        daemon = _parse_daemon(pid, argv, cwd)
        if daemon is not None:
            found.append(daemon)
    return found


def owner_gone(daemon: Daemon) -> bool:
    """True when `daemon` watches an owner pipe whose every write end is closed: its owner is gone (it unmounts
    by itself then; one still running is stuck). False for a live owner, a daemon with none, or one we may not
    inspect. The pipe is opened anew through /proc, non-blocking: a read then says end of file only when no
    writer is left, and "try again" while one is."""
    if daemon.owner_fd is None:
        return False
    try:
        fd = os.open(f"/proc/{daemon.pid}/fd/{daemon.owner_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return os.read(fd, 1) == b""
    except OSError:
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def mounted(
    mountpoint: str,
    lowers: Sequence[str],
    upper: str | None = None,
    work: str | None = None,
    options: Sequence[str] = (),
    owned: bool = True,
    enter: Sequence[str] = (),
) -> Iterator[UnionMount]:
    """`with mounted(...) as m:` mounts, and always unmounts on the way out (or goes with this process)."""
    mount = UnionMount(mountpoint, lowers, upper, work, options, owned, enter).mount()
    try:
        yield mount
    finally:
        mount.unmount()
