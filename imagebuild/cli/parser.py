"""The command line's grammar: the argparse parser of every subcommand, and a usage error as one line."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any, NoReturn

from imagebuild.errors import ImagebuildError

USAGE_ERROR = 2
RUN_FS = ("auto", "overlay", "unionfs")  # build --run-fs


class UsageError(ImagebuildError):
    """A command line argparse refused: one line, with the --help that shows the right usage."""

    status = USAGE_ERROR


def stage_count(value: str) -> int:
    """--jobs: a number of stages, 1 or more."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"'{value}' is not a number of stages (1 or more), e.g. --jobs 4")
    return int(value)


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError where it would print its usage block and exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


class CommandParser(Parser):
    """A subcommand's parser: an argument it does not know is refused here, where its own --help can be named."""

    def parse_known_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:
        parsed, extra = super().parse_known_args(args, namespace)
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed, extra


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="imagebuild", description="Build and run container images without a daemon or root.")
    p.add_argument(
        "--root", default=None, help="the image store (default: $IMAGEBUILD_ROOT or ~/.local/share/imagebuild)"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)

    b = sub.add_parser("build", help="build an image from a Dockerfile")
    b.add_argument("-f", "--file", help="the Dockerfile (default: CONTEXT/Dockerfile)")
    b.add_argument("-t", "--tag", action="append", default=[], help="name the image NAME[:TAG] (repeatable)")
    b.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    b.add_argument("--target", help="build this stage (and only the stages it needs)")
    b.add_argument(
        "--jobs",
        metavar="N",
        type=stage_count,
        help="build at most N independent stages at once (default: the number of CPUs, at least 4; 1: one by one)",
    )
    b.add_argument("--no-cache", action="store_true")
    b.add_argument("--explain-cache", action="store_true", help="say for each step why the cache hit or missed")
    b.add_argument("--insecure", action="store_true", help="FROM, --cache-from and --cache-to over plain http")
    b.add_argument(
        "--cache-from", action="append", default=[], metavar="type=registry,ref=REF", help="reuse a registry cache"
    )
    b.add_argument(
        "--cache-to",
        action="append",
        default=[],
        metavar="type=registry,ref=REF[,mode=min|max]",
        help="write the build cache to a registry",
    )
    b.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="id=ID,src=FILE|env=VAR",
        help="a secret for RUN --mount=type=secret (repeatable); it enters no layer, record or cache key",
    )
    b.add_argument("--estargz", action="store_true", help="store the image with its layers as eStargz (lazy pulls)")
    b.add_argument(
        "--run-fs",
        choices=RUN_FS,
        default=None,
        help="what RUN steps run on as root: the kernel's overlayfs where it mounts (auto, the default: "
        "$IMAGEBUILD_RUN_FS), it only (overlay), or unionfs",
    )
    b.add_argument(
        "--timestamp",
        metavar="SECONDS",
        help="as SOURCE_DATE_EPOCH: clamp newer mtimes to it, date the image with it, give it to RUN",
    )
    b.add_argument(
        "-o",
        "--output",
        action="append",
        default=[],
        metavar="type=local|tar|oci,dest=PATH",
        help="also write the result: the rootfs to a directory (local) or a tar, or the image as an OCI layout tar",
    )
    b.add_argument("context", metavar="CONTEXT")

    sub.add_parser("images", help="list images")
    i = sub.add_parser("inspect", help="show an image as JSON (shaped like docker inspect)")
    i.add_argument("image")
    h = sub.add_parser("history", help="show an image's layers and the steps that made them")
    h.add_argument("image")
    t = sub.add_parser("tag", help="give an image another name")
    t.add_argument("image")
    t.add_argument("name")
    r = sub.add_parser("rmi", help="remove an image name (and the image, when it has no other)")
    r.add_argument("images", nargs="+")
    pr = sub.add_parser("prune", help="delete layers and blobs no image uses, and lazy files no running mount uses")
    pr.add_argument("--cache", action="store_true", help="and the RUN --mount=type=cache directories")
    ck = sub.add_parser("check", help="verify every blob, layer and image in the store")
    ck.add_argument("--repair", action="store_true", help="remove what is broken and leftovers of interrupted work")

    m = sub.add_parser("mount", help="mount an image's rootfs: its layers plus a container layer")
    m.add_argument("--read-only", action="store_true", help="no container layer")
    m.add_argument("--name", help="the container layer's name (default: from the image)")
    m.add_argument("--lazy", action="store_true", help="IMAGE is a registry REF: fetch files as they are read")
    m.add_argument("--insecure", action="store_true", help="with --lazy: plain http")
    m.add_argument("image")
    m.add_argument("mountpoint")
    u = sub.add_parser("umount", help="unmount what 'imagebuild mount' mounted")
    u.add_argument("mountpoint")

    e = sub.add_parser("export", help="write an image as an OCI layout or a docker-archive tarball")
    e.add_argument("image")
    e.add_argument("--format", choices=("oci", "docker-archive"), default="oci")
    e.add_argument("-o", "--output", required=True, help="the layout directory or the tarball to write")
    e.add_argument("--name", help="the name in an OCI layout's index (default: IMAGE as a tag)")
    im = sub.add_parser("import", help="read an image from an OCI layout (DIR[:REF]) or a docker-archive")
    im.add_argument("path")
    im.add_argument("-t", "--tag", action="append", default=[], help="name the imported image")

    li = sub.add_parser("lint", help="check a Dockerfile (and its context) for mistakes and waste")
    li.add_argument("-f", "--file", help="the Dockerfile (default: CONTEXT/Dockerfile)")
    li.add_argument("--format", choices=("text", "json"), default="text")
    li.add_argument(
        "--fail-on",
        choices=("error", "warning", "info", "style"),
        default="warning",
        help="exit 1 when a finding is this severe or worse (default: warning)",
    )
    li.add_argument("context", nargs="?", default=None, metavar="CONTEXT")

    a = sub.add_parser("analyze", help="per-layer changes, wasted bytes and an efficiency score")
    a.add_argument("image")
    a.add_argument("--format", choices=("text", "json"), default="text")
    a.add_argument("--layer", type=int, help="show this layer's changes (with --tree, as a tree)")
    a.add_argument("--tree", action="store_true")
    a.add_argument("--ci", action="store_true", help="fail (exit 1) when a threshold is not met")
    a.add_argument("--lowest-efficiency", type=float, default=0.9, metavar="RATIO", help="with --ci (default 0.9)")
    a.add_argument("--highest-wasted-bytes", type=int, default=None, metavar="BYTES", help="with --ci")

    ps = sub.add_parser("push", help="push an image to a registry: REGISTRY/NAME[:TAG]")
    ps.add_argument("image")
    ps.add_argument("ref")
    ps.add_argument("--insecure", action="store_true", help="plain http (a registry on localhost, say)")
    ps.add_argument("--mount-from", metavar="REPO", help="ask the registry to mount blobs from this repository")
    ps.add_argument("--estargz", action="store_true", help="push the layers as eStargz (seekable gzip, for lazy pulls)")
    pl = sub.add_parser("pull", help="pull an image from a registry: REGISTRY/NAME[:TAG|@DIGEST]")
    pl.add_argument("ref")
    pl.add_argument("-t", "--tag", action="append", default=[])
    pl.add_argument("--insecure", action="store_true")
    lo = sub.add_parser("login", help="store credentials for a registry in ~/.docker/config.json")
    lo.add_argument("registry")
    lo.add_argument("-u", "--username", required=True)
    lo.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    lo.add_argument("--insecure", action="store_true")

    run = sub.add_parser("run", help="run a command (default: the image's ENTRYPOINT and CMD) in an image")
    run.add_argument("--rm", action="store_true", help="remove the container layer afterwards")
    run.add_argument("--name", help="the container layer's name (kept under the store without --rm)")
    run.add_argument("-e", "--env", action="append", default=[], metavar="VAR[=VALUE]", help="VAR alone: the caller's")
    run.add_argument("--env-file", action="append", default=[], metavar="FILE", help="VAR=VALUE lines (docker's)")
    run.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOST:CTR[/tcp|udp]")
    run.add_argument("--network", "--net", help="host (the default without -p), none, or bridge (with -p)")
    run.add_argument("-v", "--volume", action="append", default=[], metavar="HOST:CTR[:ro]", help="bind a host path")
    run.add_argument("-w", "--workdir", metavar="DIR", help="the working directory (made when missing)")
    run.add_argument("-u", "--user", metavar="USER[:GROUP]", help="names from the image's /etc/passwd, or ids")
    run.add_argument("-i", "--interactive", action="store_true", help="keep stdin attached")
    run.add_argument("-t", "--tty", action="store_true", help="a terminal for the command")
    run.add_argument("--entrypoint", help="replaces the image's ENTRYPOINT (and drops its CMD)")
    run.add_argument("--lazy", action="store_true", help="IMAGE is a registry REF: fetch files as they are read")
    run.add_argument("--insecure", action="store_true", help="with --lazy: plain http")
    run.add_argument("image")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    return p
