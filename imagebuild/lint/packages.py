"""What the commands of one RUN do with packages: install, upgrade, clean up; and dependency installs.

Works on :class:`~imagebuild.lint.shell.Command` lists; knows apt-get/apt, apk, dnf/yum/microdnf and the
usual language package managers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .shell import Command

_APT = frozenset({"apt-get", "apt"})
_APT_OPTIONS = frozenset({"-o", "-c", "-t", "--option", "--config-file", "--target-release"})
_RPM = frozenset({"dnf", "yum", "microdnf", "tdnf"})
_RPM_OPTIONS = frozenset({"--setopt", "-c", "--config", "--releasever", "--installroot"})
_APK_OPTIONS = frozenset({"-X", "--repository", "-p", "--root", "-t", "--virtual", "--cache-dir"})
_UPGRADES = frozenset({"upgrade", "dist-upgrade", "full-upgrade"})


@dataclass(frozen=True)
class CacheProblem:
    """A package manager run that leaves its lists or cache in the layer, and how to clean up."""

    manager: str
    message: str


def cache_problems(run: Sequence[Command], cache_targets: Sequence[str]) -> list[CacheProblem]:
    """Package installs in ``run`` whose cache stays in the layer.

    ``cache_targets`` are the targets of the RUN's `--mount=type=cache` mounts: a cache mounted there is
    not part of the layer, so it needs no cleanup.
    """
    problems: list[CacheProblem] = []
    apt = [c for c in run if c.name in _APT and c.subcommand(_APT_OPTIONS) in {"update", "install"}]
    if apt and not _removes(run, "/var/lib/apt/lists") and not _mounted(cache_targets, "/var/lib/apt"):
        verb = " and ".join(dict.fromkeys(f"{c.name} {c.subcommand(_APT_OPTIONS)}" for c in apt))
        problems.append(CacheProblem("apt", f"{verb} without 'rm -rf /var/lib/apt/lists/*' in the same RUN"))
    apk = [c for c in run if c.name == "apk" and c.subcommand(_APK_OPTIONS) in {"add", "update"}]
    if (
        apk
        and not _removes(run, "/var/cache/apk")
        and not _mounted(cache_targets, "/var/cache/apk")
        and any("--no-cache" not in c.args for c in apk)
    ):
        problems.append(CacheProblem("apk", "apk add without --no-cache (or 'rm -rf /var/cache/apk/*')"))
    rpm = [c for c in run if c.name in _RPM and c.subcommand(_RPM_OPTIONS) in {"install", "update", "upgrade"}]
    cleaned = any(c.name in _RPM and c.operands(_RPM_OPTIONS)[:2] == ["clean", "all"] for c in run)
    if (
        rpm
        and not cleaned
        and not any(_removes(run, f"/var/cache/{c.name}") for c in rpm)
        and not any(_mounted(cache_targets, f"/var/cache/{c.name}") for c in rpm)
    ):
        name = rpm[0].name
        problems.append(CacheProblem(name, f"{name} install without '{name} clean all' in the same RUN"))
    return problems


def upgrades(run: Sequence[Command]) -> list[str]:
    """The whole-system upgrades in ``run``, as written (`apt-get upgrade`, `apk upgrade`, `dnf upgrade`)."""
    out: list[str] = []
    for c in run:
        if c.name in _APT and c.subcommand(_APT_OPTIONS) in _UPGRADES:
            out.append(f"{c.name} {c.subcommand(_APT_OPTIONS)}")
        elif c.name == "apk" and c.subcommand(_APK_OPTIONS) == "upgrade":
            out.append("apk upgrade")
        elif (
            c.name in _RPM
            and c.subcommand(_RPM_OPTIONS) in {"upgrade", "update", "distro-sync"}
            and not c.operands(_RPM_OPTIONS)[1:]  # `dnf update` with no package names upgrades everything
        ):
            out.append(f"{c.name} {c.subcommand(_RPM_OPTIONS)}")
    return out


def dependency_install(run: Sequence[Command]) -> str | None:
    """The first command in ``run`` that installs dependencies (as written, shortened), or None."""
    for c in run:
        if _installs(c):
            return " ".join(c.words[:3])
    return None


def _installs(c: Command) -> bool:
    sub = c.subcommand()
    name = c.name
    if name.startswith("python") and c.args[:2] in (("-m", "pip"), ("-m", "pip3")):
        return "install" in c.args[2:]
    if name in ("pip", "pip3", "pipenv", "poetry", "bundle", "bundler", "composer", "gem"):
        return sub in ("install", "sync")
    if name == "uv":
        return sub in ("sync", "pip")
    if name in ("npm", "pnpm"):
        return sub in ("install", "i", "ci")
    if name == "yarn":
        return sub in ("", "install")
    if name == "go":
        return c.operands()[:2] == ["mod", "download"] or sub in ("get", "build", "install")
    if name == "cargo":
        return sub in ("build", "fetch", "install")
    if name in ("mvn", "gradle", "gradlew", "sbt"):
        return True
    if name in _APT:
        return c.subcommand(_APT_OPTIONS) == "install"
    if name == "apk":
        return c.subcommand(_APK_OPTIONS) == "add"
    if name in _RPM:
        return c.subcommand(_RPM_OPTIONS) == "install"
    if name in ("conda", "mamba", "micromamba"):
        return sub in ("install", "env", "create")
    return False


def _removes(run: Sequence[Command], prefix: str) -> bool:
    return any(c.name == "rm" and any(arg.startswith(prefix) for arg in c.operands()) for c in run)


def _mounted(cache_targets: Sequence[str], prefix: str) -> bool:
    return any(
        target.rstrip("/").startswith(prefix) or prefix.startswith(target.rstrip("/") + "/")
        for target in cache_targets
        if target
    )
