"""`imagebuild run`: an image's rootfs mounted with a container layer, and a command run in it by bubblewrap as a
run specification (runspec.py) says: its user, environment, working directory, binds, network and terminal.

Whatever happens (the command fails, a signal, an error in between) the command, the mount, the namespaces and
pasta are gone when `run` returns; when imagebuild itself is killed, each of them watches a pipe from it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from types import FrameType

from imagebuild import sandbox, userns
from imagebuild.errors import BuildError
from imagebuild.network import Network, check_free
from imagebuild.runspec import RunSpec, lookup_user, parse_env_file, scoped
from imagebuild.terminal import Terminal
from unionfs import MountError, UnionMount

MountFor = Callable[[str, list[str]], UnionMount]  # (mount point, options) -> the image's mount


def check_host(spec: RunSpec) -> None:
    """What the flags name on the host, before anything is mounted."""
    for bind in spec.binds:
        if not os.path.exists(bind.source):
            raise BuildError(
                f"-v {bind.source}:{bind.target}: '{bind.source}' does not exist on the host: create it first"
            )
    for port in spec.ports:
        check_free(port)
    if spec.tty and spec.interactive and not os.isatty(0):
        raise BuildError("-it: the input device is not a terminal: drop -t (or run it from a terminal)")


class Rootfs:
    """The mounted rootfs as this process may reach it: directly, or through the container's namespace."""

    def __init__(self, path: str, namespace: userns.Namespace | None) -> None:
        self.path = path
        self.namespace = namespace

    def host(self, inside: str) -> str:
        return os.path.join(self.path, inside.lstrip("/"))

    def read(self, inside: str) -> str:
        if self.namespace is not None:
            return self.namespace.read(self.host(inside)) or ""
        return sandbox.read_text(self.host(inside)) or ""

    def readlink(self, inside: str) -> str | None:
        if self.namespace is not None:
            return self.namespace.readlink(self.host(inside))
        try:
            return os.readlink(self.host(inside))
        except OSError:
            return None

    def make(self, directories: list[str], files: list[str]) -> None:
        """Mount points and the working directory, made where the image lacks them (as the container's root)."""
        if self.namespace is not None:
            parents = [*directories, *(os.path.dirname(f) for f in files)]
            if parents:
                self.namespace.makedirs(*(self.host(d) for d in parents))
            if files:
                self.namespace.create(*(self.host(f) for f in files))
            return
        for directory in directories:
            os.makedirs(self.host(directory), 0o755, exist_ok=True)
        for path in files:
            os.makedirs(os.path.dirname(self.host(path)), 0o755, exist_ok=True)
            if not os.path.lexists(self.host(path)):
                os.close(os.open(self.host(path), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))


def volumes(spec: RunSpec, rootfs: Rootfs) -> tuple[list[tuple[str, str, bool]], str]:
    """The -v binds and the working directory, each resolved in the image (its symlinks followed within the
    container) and made when missing, as docker makes them."""
    found: list[tuple[str, str, bool]] = []
    directories: list[str] = []
    files: list[str] = []
    for bind in spec.binds:
        target = scoped(bind.target, rootfs.readlink)
        (directories if os.path.isdir(bind.source) else files).append(target)
        found.append((bind.source, target, bind.read_only))
    workdir = scoped(spec.workdir, rootfs.readlink)
    rootfs.make([*directories, workdir], files)
    return found, workdir


def run(spec: RunSpec, mount_for: MountFor) -> int:
    check_host(spec)
    ranges = userns.ranges()
    namespace = None if ranges is None else userns.Namespace(*ranges, net=spec.network == "private")
    path = sandbox.mountpoint(private=namespace is None)
    mount = mount_for(path, sandbox.union_options(spec.user, namespace is not None))
    rootfs = Rootfs(path, namespace)
    network: Network | None = None
    terminal: Terminal | None = None
    child: subprocess.Popen[bytes] | None = None

    def stop(_signum: int, _frame: FrameType | None) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    # SIGTERM/SIGINT stop the command; they never cut the cleanup short (unmount, namespaces, pasta)
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    names = sandbox.names_dir()
    try:
        if namespace is not None:
            mount.enter = namespace.open().daemon()
        if spec.network == "private":
            network = Network(spec.ports, namespace.holder.pid if namespace and namespace.holder else None).open()
        mount.mount()
        if namespace is not None:
            namespace.makedirs(*(rootfs.host(d) for d in ("dev", "proc", "etc")))
        uid, gid, home = lookup_user(spec.user or "0", rootfs.read("/etc/passwd"), rootfs.read("/etc/group"))
        env = {"HOME": home, **spec.env} if "HOME" not in spec.env else dict(spec.env)
        binds = sandbox.name_files(names, lambda name: rootfs.readlink("/" + name) is not None)
        if namespace is not None:
            namespace.create(*(rootfs.host(target) for _, target in binds))
        mounts, workdir = volumes(spec, rootfs)
        options = ["--unshare-net"] if spec.network == "none" else []
        enter = [*(namespace.enter() if namespace else []), *(network.enter() if network else [])]
        if spec.tty:
            terminal = Terminal()
            options += terminal.bwrap_options()
        child = sandbox.spawn(
            path,
            spec.argv,
            env,
            workdir,
            (uid, gid),
            enter,
            binds,
            options,
            inside=namespace is not None,
            stdin=None if spec.interactive else subprocess.DEVNULL,
            terminal=terminal.inside if terminal else None,
            volumes=mounts,
        )
        status = terminal.relay(child, spec.interactive) if terminal else child.wait()
    except MountError as exc:
        raise BuildError(f"cannot mount image '{spec.image}': {exc}") from None
    finally:
        try:
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
            if mount.pid is not None:  # mounted (a namespace or pasta may fail before)
                mount.unmount()
            if terminal is not None:
                terminal.close()
            if network is not None:
                network.close()
            if namespace is not None:
                namespace.close()
            sandbox.remove_mountpoint(path)
            shutil.rmtree(names, ignore_errors=True)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    return status if status >= 0 else 128 - status


def env_files(paths: list[str], environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """The entries of each --env-file, in order."""
    entries = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise BuildError(f"--env-file {path}: cannot read it ({reason}): give a file of VAR=VALUE lines") from None
        entries += parse_env_file(text, path, environ)
    return entries
