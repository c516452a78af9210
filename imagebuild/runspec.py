"""`imagebuild run`'s flags, as `docker run` spells and means them, turned into a run specification. Pure: no
filesystem, no processes; what the flags name on the host (a -v source, an --env-file) is read by the caller.

Every error is a BuildError with one line naming the flag, the value and what to do.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from imagebuild.errors import BuildError

NETWORKS = ("host", "none", "bridge")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # docker's, for an image with none


@dataclass(frozen=True)
class Port:
    """One `-p`: host port(s) forwarded to container port(s), on one host address or all."""

    host_ip: str | None
    host: tuple[int, int]  # first, last (a range, or one port twice)
    container: tuple[int, int]
    protocol: str  # tcp or udp
    spec: str  # as given, for messages

    def host_ports(self) -> range:
        return range(self.host[0], self.host[1] + 1)


@dataclass(frozen=True)
class Bind:
    """One `-v HOST:CTR[:ro]`: a host path bound into the container (its content never enters a layer)."""

    source: str  # absolute, on the host
    target: str  # absolute, in the container
    read_only: bool


@dataclass
class RunSpec:
    image: str
    argv: list[str]
    env: dict[str, str]
    workdir: str
    user: str | None  # USER[:GROUP], names or numbers, resolved in the image's /etc/passwd and /etc/group
    network: str  # host, none or private (a network namespace of its own, ports forwarded by pasta)
    ports: list[Port] = field(default_factory=list)
    binds: list[Bind] = field(default_factory=list)
    interactive: bool = False
    tty: bool = False
    warnings: list[str] = field(default_factory=list)


def _port_range(text: str, spec: str, what: str) -> tuple[int, int]:
    first, dash, last = text.partition("-")
    if not first.isdigit() or (dash and not last.isdigit()):
        raise BuildError(f"-p {spec}: '{text}' is not a {what} port (a number, or FIRST-LAST)")
    low, high = int(first), int(last) if dash else int(first)
    if not 1 <= low <= high <= 65535:
        raise BuildError(f"-p {spec}: {what} port '{text}' is out of range: ports are 1 to 65535, FIRST-LAST rising")
    return low, high


def parse_port(spec: str) -> Port:
    """`-p [IP:]HOST:CTR[/tcp|udp]`; IPv6 addresses in brackets (`[::1]:8080:80`); ranges of equal length."""
    rest, slash, protocol = spec.partition("/")
    protocol = protocol.lower() if slash else "tcp"
    if protocol not in ("tcp", "udp"):
        raise BuildError(f"-p {spec}: protocol '{protocol}' is not tcp or udp")
    host_ip: str | None = None
    if rest.startswith("["):
        address, bracket, rest = rest[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise BuildError(f"-p {spec}: an IPv6 address goes in brackets: [ADDR]:HOST:CTR")
        host_ip, rest = address, rest[1:]
    parts = rest.split(":")
    if host_ip is None and len(parts) == 3:
        host_ip, parts = parts[0] or None, parts[1:]
    if len(parts) != 2 or not parts[0]:
        raise BuildError(
            f"-p {spec}: give the host port and the container's: -p [IP:]HOST:CONTAINER[/tcp|udp] (e.g. -p 8080:80)"
        )
    if host_ip is not None:
        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError:
            raise BuildError(f"-p {spec}: '{host_ip}' is not an IP address of the host") from None
    host = _port_range(parts[0], spec, "host")
    container = _port_range(parts[1], spec, "container")
    if host[1] - host[0] != container[1] - container[0]:
        raise BuildError(f"-p {spec}: the host and container port ranges differ in length")
    return Port(host_ip, host, container, protocol, spec)


def parse_volume(spec: str, cwd: str) -> Bind:
    """`-v HOST:CTR[:ro|rw]`. HOST is a path (absolute, or relative to `cwd` when it starts with '.'); a bare name
    is one of docker's named volumes, which there is no daemon to keep."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise BuildError(f'-v {spec}: give HOST_PATH:CONTAINER_PATH[:ro] (e.g. -v "$PWD/data:/data:ro")')
    source, target = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    unknown = [o for o in options if o not in ("ro", "rw", "readonly")]
    if unknown:
        raise BuildError(f"-v {spec}: unknown option '{unknown[0]}': use ro or rw")
    if not (source.startswith("/") or source.startswith(".")):
        raise BuildError(
            f"-v {spec}: '{source}' is a named volume, which needs a daemon to keep it: give a host path "
            f"(./{source} or an absolute one)"
        )
    if not target.startswith("/"):
        raise BuildError(f"-v {spec}: the container path '{target}' is not absolute: give it from /")
    target = os.path.normpath(target)
    if target == "/":
        raise BuildError(f"-v {spec}: the container's / cannot be replaced by a bind: give a directory in it")
    return Bind(os.path.normpath(os.path.join(cwd, source)), target, "ro" in options or "readonly" in options)


def env_entry(item: str, environ: Mapping[str, str], where: str) -> tuple[str, str] | None:
    """`VAR=VALUE`, or `VAR` alone for the caller's value (None when the caller has none), as docker reads them."""
    name, sep, value = item.partition("=")
    if not name:
        raise BuildError(f"{where}: '{item}' has no variable name: give VAR=VALUE or VAR")
    if sep:
        return name, value
    return (name, environ[name]) if name in environ else None


def parse_env_file(text: str, path: str, environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """docker's --env-file format: one VAR=VALUE (taken as written, quotes and all) or VAR (the caller's value)
    a line; blank lines and lines starting with '#' are skipped, leading whitespace ignored."""
    found = []
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        name = line.partition("=")[0]
        if re.search(r"\s", name):
            raise BuildError(f"--env-file {path}:{number}: variable '{name}' contains whitespace: write VAR=VALUE")
        entry = env_entry(line, environ, f"--env-file {path}:{number}")
        if entry is not None:
            found.append(entry)
    return found


def command(
    args: Sequence[str], entrypoint: str | None, image_entrypoint: list[str] | None, image_cmd: list[str] | None
) -> list[str]:
    """docker's rules: --entrypoint replaces the image's ENTRYPOINT and drops its CMD (the arguments follow it);
    `--entrypoint ""` drops the ENTRYPOINT and runs the arguments, or else the image's CMD; without it, the
    image's ENTRYPOINT runs with the arguments, or else with its CMD."""
    if entrypoint:
        return [entrypoint, *args]
    if entrypoint == "":
        return list(args) or list(image_cmd or [])
    return [*(image_entrypoint or []), *(args or image_cmd or [])]


def environment(
    image_env: Sequence[str], env_files: Sequence[tuple[str, str]], flags: Sequence[str], environ: Mapping[str, str]
) -> dict[str, str]:
    """The image's ENV, then --env-file lines, then -e (later wins); PATH defaults to docker's."""
    env = dict(e.partition("=")[::2] for e in image_env)
    env.update(env_files)
    for item in flags:
        entry = env_entry(item, environ, f"-e {item}")
        if entry is not None:
            env[entry[0]] = entry[1]
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def network_mode(network: str | None, ports: Sequence[Port], warnings: list[str]) -> str:
    """host (today's default: the host's network), none (loopback only) or private (a namespace of its own with
    the -p ports forwarded): -p alone, or `--network bridge`, docker's default, gives the last."""
    if network is not None and network not in NETWORKS:
        raise BuildError(f"--network {network}: use one of {', '.join(NETWORKS)}")
    if network in ("host", "none"):
        if ports:
            warnings.append(f"published ports are discarded with --network {network}")
        return network
    return "private" if ports or network == "bridge" else "host"


def spec(args: Any, image_config: Any, environ: Mapping[str, str], env_files: Sequence[tuple[str, str]]) -> RunSpec:
    """The run specification from parsed flags (attributes named as `imagebuild run`'s), the image's config and
    the --env-file entries the caller read (`parse_env_file`)."""
    argv = command(args.cmd, args.entrypoint, image_config.entrypoint, image_config.cmd)
    if not argv or argv == [""]:
        raise BuildError(f"image '{args.image}' has no ENTRYPOINT or CMD: give a command to run")
    workdir = args.workdir if args.workdir is not None else (image_config.working_dir or "/")
    if not workdir.startswith("/"):
        raise BuildError(f"-w {workdir}: the working directory must be an absolute path")
    ports = [parse_port(p) for p in args.publish]
    warnings: list[str] = []
    network = network_mode(args.network, ports, warnings)
    cwd = environ.get("PWD") or os.getcwd()
    binds = [parse_volume(v, cwd) for v in args.volume]
    targets = [b.target for b in binds]
    for target in targets:
        if targets.count(target) > 1:
            raise BuildError(f"-v: '{target}' is given twice as a container path: bind each path once")
    env = environment(image_config.env, env_files, args.env, environ)
    if args.tty:
        env.setdefault("TERM", "xterm")
    return RunSpec(
        image=args.image,
        argv=argv,
        env=env,
        workdir=os.path.normpath(workdir),
        user=args.user if args.user is not None else (image_config.user or None),
        network=network,
        ports=ports if network == "private" else [],
        binds=binds,
        interactive=args.interactive,
        tty=args.tty,
        warnings=warnings,
    )


def lookup_user(user_spec: str, passwd: str, group: str) -> tuple[int, int, str]:
    """`USER[:GROUP]` as docker resolves it in the image's /etc/passwd and /etc/group: (uid, gid, home). A name
    must be there; a number need not be (its group is then 0, its home /); GROUP overrides the passwd group."""
    name, _, group_name = user_spec.partition(":")
    uid, gid, home = None, 0, "/"
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) < 6 or not fields[2].isdigit() or not fields[3].isdigit():
            continue
        if fields[0] == name or (name.isdigit() and int(fields[2]) == int(name)):
            uid, gid, home = int(fields[2]), int(fields[3]), fields[5] or "/"
            break
    if uid is None:
        if not name.isdigit():
            raise BuildError(f"user '{name}' is not in the image's /etc/passwd: give a numeric id, or add the user")
        uid = int(name)
    if group_name:
        if group_name.isdigit():
            gid = int(group_name)
        else:
            found = [
                f[2] for f in (line.split(":") for line in group.splitlines()) if len(f) > 2 and f[0] == group_name
            ]
            if not found or not found[0].isdigit():
                raise BuildError(f"group '{group_name}' is not in the image's /etc/group: give a numeric id")
            gid = int(found[0])
    return uid, gid, home


def scoped(path: str, readlink: Any) -> str:
    """`path` in the container with every symlink resolved as the container sees it: absolute targets from the
    container's /, '..' never above it (docker's rule for where a -v or -w lands). `readlink(path)` gives a
    container path's link target, or None when it is not a link (or does not exist)."""
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = "/" + "/".join([*done, part])
        target = readlink(candidate)
        if target is None:
            done.append(part)
            continue
        hops += 1
        if hops > 40:
            raise BuildError(f"'{path}' in the image has too many levels of symbolic links")
        if target.startswith("/"):
            done = []
        parts = [p for p in target.split("/") if p] + parts
    return "/" + "/".join(done)
