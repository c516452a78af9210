"""A container's private network: a network namespace of its own, with `-p` ports forwarded from the host by
pasta (Debian's `passt`), as rootless podman does it.

A holder process keeps the namespace (`unshare --net`, with a user namespace of its own as an ordinary user
without subordinate ids; the container's user namespace holds it when there is one, userns.py) until its stdin,
a pipe only imagebuild writes to, ends. pasta attaches to that namespace, binds the host ports, and goes to the
background once they are bound; a watcher (a shell whose stdin is another such pipe) then waits for imagebuild
to close the pipe or be gone, and stops pasta. So nothing of the network outlives the container's imagebuild,
even when imagebuild is killed outright.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence

from imagebuild.errors import BuildError
from imagebuild.runspec import Port

READY_WITHIN = 20.0  # seconds for the namespace and pasta
GONE_WITHIN = 5.0  # seconds for pasta to exit once told

# The watcher: start pasta (it returns once its ports are bound, leaving its daemon behind), say so, wait for the
# end of stdin, stop the daemon and remove the directory of its pid file.
WATCH = (
    '"$@" || exit 3\necho ready\nread -r _ || :\n'
    'kill "$(cat "$PASTA_DIR/pasta.pid")" 2>/dev/null || :\nrm -rf -- "$PASTA_DIR"\n'
)


def pasta_command(ports: Sequence[Port], pid_file: str, netns: str, userns: str | None, root: bool) -> list[str]:
    """pasta's command line: the -p ports in, nothing else: no other host port reaches the container, and the
    container reaches no port bound on the host's loopback (-T none -U none, no gateway mapped to the host)."""
    command = ["pasta", "--config-net", "--quiet", "--no-map-gw", "--pid", pid_file]
    if root:
        command += ["--runas", "0"]  # pasta would drop to nobody, which may not open root's namespace
    for flag, protocol in (("-t", "tcp"), ("-u", "udp")):
        chosen = [p for p in ports if p.protocol == protocol]
        for port in chosen:
            address = f"{port.host_ip}/" if port.host_ip else ""
            host = f"{port.host[0]}-{port.host[1]}" if port.host[1] != port.host[0] else str(port.host[0])
            inside = f"{port.container[0]}-{port.container[1]}" if port.container[1] != port.container[0] else ""
            command += [flag, f"{address}{host}:{inside or port.container[0]}"]
        if not chosen:
            command += [flag, "none"]
    command += ["-T", "none", "-U", "none"]
    if userns is not None:
        command += ["--userns", userns]
    return [*command, "--netns", netns]


def check_free(port: Port) -> None:
    """Refuse a host port something already holds, before anything starts (pasta would say it less plainly)."""
    kind = socket.SOCK_STREAM if port.protocol == "tcp" else socket.SOCK_DGRAM
    for number in port.host_ports():
        family = socket.AF_INET6 if port.host_ip is None or ":" in port.host_ip else socket.AF_INET
        address = port.host_ip or "::"
        try:
            probe = socket.socket(family, kind)
        except OSError:  # no IPv6 here
            probe, address = socket.socket(socket.AF_INET, kind), "0.0.0.0"
        with probe:
            if family == socket.AF_INET6 and probe.family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, number))
            except OSError as exc:
                raise BuildError(_bind_error(port, number, exc)) from None


def _bind_error(port: Port, number: int, exc: OSError) -> str:
    where = f"{port.host_ip}:{number}" if port.host_ip else f"port {number}"
    if exc.errno == 98:  # EADDRINUSE
        return (
            f"-p {port.spec}: {where}/{port.protocol} is already in use on the host: stop what holds it, "
            "or publish another port"
        )
    if exc.errno == 13:  # EACCES
        try:
            with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
                lowest = f.read().strip()
        except OSError:
            lowest = "1024"
        return (
            f"-p {port.spec}: an ordinary user may not bind {where}: publish port {lowest} or above "
            "(sysctl net.ipv4.ip_unprivileged_port_start)"
        )
    if exc.errno == 99:  # EADDRNOTAVAIL
        return f"-p {port.spec}: {port.host_ip} is not an address of this host: give one of its addresses"
    return f"-p {port.spec}: cannot bind {where}: {exc.strerror or exc}"


class Network:
    """The namespace and its pasta. `holder`: the pid of a process already in the container's own user, mount and
    network namespaces (userns.Namespace with a network); without it, a holder of its own is made."""

    def __init__(self, ports: Sequence[Port], holder: int | None = None) -> None:
        self.ports = list(ports)
        self.given = holder
        self.own: subprocess.Popen[bytes] | None = None
        self.watch: subprocess.Popen[bytes] | None = None
        self.pasta: int | None = None
        self.scratch: str | None = None

    @property
    def pid(self) -> int:
        if self.given is not None:
            return self.given
        assert self.own is not None
        return self.own.pid

    def open(self) -> Network:
        for port in self.ports:
            check_free(port)
        if shutil.which("pasta") is None:
            raise BuildError("publishing ports (-p) needs pasta: apt-get install passt")
        try:
            if self.given is None:
                self._hold()
            self._forward()
        except BaseException:
            self.close()
            raise
        return self

    def _hold(self) -> None:
        own = os.readlink("/proc/self/ns/net")
        if os.geteuid() == 0:  # no capability left, so that pasta (root without most of its own) may open it
            command = ["unshare", "--net", "--", "setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", "cat"]
        else:
            command = ["unshare", "--user", "--map-root-user", "--net", "--", "cat"]
        self.own = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + READY_WITHIN
        # ready once in its own namespace and, as root, with no capability left: pasta (root, keeping few of its
        # own) may not open the namespace of a process that still has more, as unshare and setpriv do until cat
        while _netns(self.own.pid) in (own, None) or (os.geteuid() == 0 and _has_capabilities(self.own.pid)):
            if self.own.poll() is not None or time.monotonic() > deadline:
                error = self.own.stderr.read().decode(errors="replace").strip() if self.own.stderr else ""
                raise BuildError(f"cannot make a network namespace for the container: {error or 'unshare failed'}")
            time.sleep(0.005)

    def _forward(self) -> None:
        self.scratch = tempfile.mkdtemp(prefix="imagebuild-net-")
        pid_file = os.path.join(self.scratch, "pasta.pid")
        rootless = os.geteuid() != 0
        userns = f"/proc/{self.pid}/ns/user" if rootless else None
        pasta = pasta_command(self.ports, pid_file, f"/proc/{self.pid}/ns/net", userns, not rootless)
        self.watch = subprocess.Popen(
            ["sh", "-c", WATCH, "sh", *pasta],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PASTA_DIR": self.scratch},
        )
        assert self.watch.stdout is not None
        ready, _, _ = select.select([self.watch.stdout], [], [], READY_WITHIN)
        line = self.watch.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            if ready:
                self.watch.wait(READY_WITHIN)
            raise BuildError(self._failure())
        with contextlib.suppress(OSError, ValueError), open(pid_file) as f:
            self.pasta = int(f.read().strip())

    def _failure(self) -> str:
        assert self.watch is not None
        error = ""
        if self.watch.poll() is not None and self.watch.stderr is not None:
            lines = self.watch.stderr.read().decode(errors="replace").splitlines()
            lines = [line.strip() for line in lines if line.strip() and "syslog" not in line]
            error = lines[-1] if lines else ""
        if "tun" in error:
            return (
                "pasta cannot open /dev/net/tun for the container's network: make it usable by every user "
                "(as root: chmod 0666 /dev/net/tun, as Debian's udev does)"
            )
        if "bind" in error.lower():
            spec = " ".join(p.spec for p in self.ports)
            return f"-p {spec}: pasta could not bind the host port ({error}): publish another port"
        return f"pasta could not set up the container's network: {error or 'it did not start in time'}"

    def enter(self) -> list[str]:
        """A command prefix that runs a command in the namespace; none with the container's own namespaces (their
        prefix enters it)."""
        if self.given is not None:
            return []
        if os.geteuid() == 0:
            return ["nsenter", f"--net=/proc/{self.pid}/ns/net", "--"]
        return ["nsenter", f"--target={self.pid}", "--user", "--net", "--preserve-credentials", "--"]

    def close(self) -> None:
        watch, self.watch = self.watch, None
        if watch is not None:
            if watch.stdin is not None:
                watch.stdin.close()
            try:
                watch.wait(GONE_WITHIN)
            except subprocess.TimeoutExpired:
                watch.kill()
                watch.wait()
            for stream in (watch.stdout, watch.stderr):
                if stream is not None:
                    stream.close()
        if self.pasta is not None:
            _wait_gone(self.pasta)
            self.pasta = None
        own, self.own = self.own, None
        if own is not None:
            if own.stdin is not None:
                own.stdin.close()
            try:
                own.wait(GONE_WITHIN)
            except subprocess.TimeoutExpired:
                own.kill()
                own.wait()
            if own.stderr is not None:
                own.stderr.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


def _wait_gone(pid: int) -> None:
    """Wait until pasta has exited (a zombie, which init reaps, holds no port), killing it after GONE_WITHIN."""
    deadline = time.monotonic() + GONE_WITHIN
    while _running(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            deadline += GONE_WITHIN
        time.sleep(0.01)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _has_capabilities(pid: int) -> bool:
    """Whether the process `pid` has any permitted capability (True while it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("CapPrm:") and int(line.split()[1], 16) != 0 for line in f)
    except (OSError, ValueError):
        return True


def _netns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None
