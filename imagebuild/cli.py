"""`imagebuild`: build images from Dockerfiles, keep them in a shared layer store, mount and run them without root.

The only module of the builder that parses argv, prints or exits. Every error a user can cause is one line,
`imagebuild: error: ...`, and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from imagebuild import analyze, container, lint, runspec, transport
from imagebuild import context as build_context
from imagebuild.analyze import human
from imagebuild.builder.executor import Builder, Options
from imagebuild.dockerfile import DockerfileError, parse_file
from imagebuild.errors import BuildError
from imagebuild.store.images import Image, Store, default_root, normalize_tag
from imagebuild.transport import registry
from unionfs.api import MountError, UnionMount

NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?$")
USAGE_ERROR = 2
UNION_FSTYPE = "fuse.unionfs"  # what /proc/self/mountinfo calls a unionfs mount


class UsageError(Exception):
    """A command line argparse refused: one line, with the --help that shows the right usage."""


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
    b.add_argument("--target", help="build up to this stage")
    b.add_argument("--no-cache", action="store_true")
    b.add_argument("--explain-cache", action="store_true", help="say for each step why the cache hit or missed")
    b.add_argument("--insecure", action="store_true", help="FROM a registry over plain http")
    b.add_argument(
        "--timestamp",
        metavar="SECONDS",
        help="as SOURCE_DATE_EPOCH: clamp newer mtimes to it, date the image with it, give it to RUN",
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
    sub.add_parser("prune", help="delete layers and blobs no image uses")
    ck = sub.add_parser("check", help="verify every blob, layer and image in the store")
    ck.add_argument("--repair", action="store_true", help="remove what is broken and leftovers of interrupted work")

    m = sub.add_parser("mount", help="mount an image's rootfs: its layers plus a container layer")
    m.add_argument("--read-only", action="store_true", help="no container layer")
    m.add_argument("--name", help="the container layer's name (default: from the image)")
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
    run.add_argument("image")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    return p


def key_values(items: Sequence[str], what: str) -> dict[str, str]:
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BuildError(f"{what} '{item}' is not KEY=VALUE")
        result[key] = value
    return result


def epoch(timestamp: str | None) -> int | None:
    """The build's epoch: --timestamp, else SOURCE_DATE_EPOCH, else None (real times, dated now)."""
    if timestamp is not None:
        if not timestamp.isdigit():
            raise BuildError(f"--timestamp '{timestamp}' is not a number of seconds since 1970")
        return int(timestamp)
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise BuildError(f"SOURCE_DATE_EPOCH='{value}' is not a number of seconds: unset it or fix it")
    return int(value)


def check_names(names: Sequence[str], flag: str = "-t ") -> None:
    for name in names:
        if not NAME.match(normalize_tag(name)):
            raise BuildError(
                f"{flag}'{name}' is not an image name: use lowercase letters, digits and . _ - / with an "
                "optional :tag (e.g. demo-app:1.0)"
            )


def find_dockerfile(context: str | None, file: str | None) -> str:
    """The Dockerfile to read, once the context (when given) is a directory; one line naming what is missing."""
    if context is not None:
        if not os.path.exists(context):
            raise BuildError(f"build context '{context}' does not exist: give the directory to build from")
        if not os.path.isdir(context):
            raise BuildError(
                f"build context '{context}' is not a directory: give the directory to build from "
                "(and the Dockerfile with -f)"
            )
    if file is not None:
        if not os.path.exists(file):
            raise BuildError(f"-f '{file}' does not exist: name the Dockerfile to use")
        if not os.path.isfile(file):
            raise BuildError(f"-f '{file}' is not a file: name the Dockerfile itself")
        return str(file)
    dockerfile = os.path.join(context or ".", "Dockerfile")
    if not os.path.isfile(dockerfile):
        raise BuildError(f"no Dockerfile at '{dockerfile}': write one, or name it with -f")
    return dockerfile


def cmd_build(store: Store, args: argparse.Namespace) -> None:
    check_names(args.tag)
    timestamp = epoch(args.timestamp)
    root = args.context
    dockerfile = find_dockerfile(root, args.file)
    build_args = key_values(args.build_arg, "--build-arg")
    df = parse_file(dockerfile)
    rel = os.path.relpath(os.path.realpath(dockerfile), os.path.realpath(root))
    ctx = build_context.load(root, rel)
    print(f"Build context: {len(ctx.entries)} entries, {human(ctx.size)}", flush=True)
    if ctx.size > build_context.LARGE_CONTEXT:
        print(
            f"warning: the build context is large ({human(ctx.size)}): list what the image does not need in "
            f"{os.path.join(root, '.dockerignore')}",
            file=sys.stderr,
        )
    options = Options(
        build_args,
        args.target,
        args.no_cache,
        args.explain_cache,
        timestamp,
        args.insecure,
    )
    builder = Builder(store, ctx, df, options, sys.stdout)
    image_id, _state = builder.build()
    layered = [r for r in builder.reports if r.cached is not None]
    hits = sum(1 for r in layered if r.cached)
    print(f"Cache: {hits} of {len(layered)} layer steps reused")
    report = analysis(store, store.resolve(image_id))
    summary = f"Efficiency: {report.efficiency:.1%}, {human(report.wasted)} of {human(report.total)} wasted"
    if report.wasted:
        summary += f" (files deleted or overwritten by later layers): see 'imagebuild analyze {image_id[7:19]}'"
    print(summary)
    print(f"Successfully built {image_id}")
    for tag in args.tag:
        store.tag(image_id, tag)
        print(f"Successfully tagged {normalize_tag(tag)}")
    if not args.tag:
        print(f"The image has no name: use 'imagebuild tag {image_id[7:19]} NAME' to give it one")


_LAYER_SIZES: dict[str, int] = {}  # a stored layer never changes: each is walked once per command


def layer_sizes(store: Store, image: Image) -> list[int]:
    """Each layer's content size, bottom first: the definition `analyze` and the build summary use too."""
    sizes = []
    for layer in image.layers:
        path = store.layer_dir(layer.diff_id)
        if path not in _LAYER_SIZES:
            _LAYER_SIZES[path] = analyze.layer_size(path)
        sizes.append(_LAYER_SIZES[path])
    return sizes


def image_size(store: Store, image: Image) -> int:
    return sum(layer_sizes(store, image))


def cmd_images(store: Store) -> None:
    tags: dict[str, list[str]] = {}
    for tag, image_id in store.tags().items():
        tags.setdefault(image_id, []).append(tag)
    rows = []
    for image_id in store.image_ids():
        image = store.resolve(image_id)
        for tag in sorted(tags.get(image_id, ["<none>:<none>"])):
            repo, _, name = tag.rpartition(":")
            rows.append((repo, name, image_id[7:19], human(image_size(store, image))))
    print(f"{'REPOSITORY':<30} {'TAG':<12} {'IMAGE ID':<14} SIZE")
    for row in rows:
        print(f"{row[0]:<30} {row[1]:<12} {row[2]:<14} {row[3]}")


def inspect_doc(store: Store, image: Image) -> dict[str, Any]:
    config = image.config.config
    doc: dict[str, Any] = {
        "Id": image.id,
        "RepoTags": sorted(t for t, i in store.tags().items() if i == image.id),
        "Created": image.config.created,
        "Architecture": image.config.architecture,
        "Os": image.config.os,
        "Size": image_size(store, image),
        "CompressedSize": sum(layer.blob.size for layer in image.layers),
        "Config": {
            "User": config.user or "",
            "Env": config.env,
            "Cmd": config.cmd,
            "Entrypoint": config.entrypoint,
            "WorkingDir": config.working_dir or "",
            "ExposedPorts": {p: {} for p in config.exposed_ports},
            "Volumes": {v: {} for v in config.volumes} or None,
            "Labels": config.labels or None,
            "StopSignal": config.stop_signal,
            "Shell": config.shell,
            "Healthcheck": config.healthcheck.to_dict() if config.healthcheck else None,
            "OnBuild": config.on_build or None,
        },
        "RootFS": {"Type": "layers", "Layers": list(image.config.rootfs.diff_ids)},
        "Manifest": {"Layers": [layer.blob.to_dict() for layer in image.layers]},
    }
    return doc


def cmd_history(store: Store, image: Image) -> None:
    sizes = iter(layer_sizes(store, image))
    rows = []
    for entry in image.config.history:  # layers pair with the non-empty entries, oldest first
        size = "0B" if entry.empty_layer else human(next(sizes, 0))
        rows.append(f"{(entry.created_by or '')[:60]:<60} {size:>10}  {entry.comment or ''}")
    print(f"{'STEP':<60} {'SIZE':>10}  COMMENT")
    print("\n".join(reversed(rows)))


def cmd_rmi(store: Store, names: Sequence[str]) -> None:
    for name in names:
        image = store.resolve(name)
        if normalize_tag(name) in store.tags():
            store.untag(name)
            print(f"Untagged: {normalize_tag(name)}")
        if not any(i == image.id for i in store.tags().values()):
            store.remove_image(image.id)
            print(f"Deleted: {image.id}")
    print("Run 'imagebuild prune' to free the layers no image uses")


def container_dirs(store: Store, name: str) -> tuple[str, str]:
    base = os.path.join(store.root, "containers", name)
    upper, work = os.path.join(base, "upper"), os.path.join(base, "work")
    os.makedirs(upper, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    return upper, work


def container_name(image: Image, given: str | None) -> str:
    name = given or image.id[7:19]
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
        raise BuildError(f"--name {name}: use letters, digits, '.', '_' and '-'")
    return name


def image_mount(
    store: Store, image: Image, mountpoint: str, name: str | None, options: Sequence[str] = (), owned: bool = True
) -> UnionMount:
    """The union of an image's layers (and container `name`'s layer). `owned`: it goes when this process does."""
    lowers = store.lower_dirs(image.layers)
    if not lowers:
        lowers = [store.scratch_dir("empty-")]
    if name is None:
        return UnionMount(mountpoint, lowers, options=options, owned=owned)
    upper, work = container_dirs(store, name)
    return UnionMount(mountpoint, lowers, upper, work, options, owned=owned)


def mount_type(path: str) -> str | None:
    """The filesystem type of the topmost mount at `path`, or None when nothing is mounted there."""
    point = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split(" ")
            if re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]) == point:
                found = fields[fields.index("-") + 1]
    return found


def make_mountpoint(path: str) -> list[str]:
    """Check that `path` can take a mount (an empty directory), making it and its parents when missing, as
    `mount --mkdir` does. Returns the directories made, deepest first, for removal should the mount fail."""
    if mount_type(path) is not None:
        raise BuildError(f"'{path}' is already a mount point: unmount it first (imagebuild umount {path})")
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise BuildError(f"mount point '{path}' is not a directory: give an empty directory or a new path")
        if os.listdir(path):
            raise BuildError(
                f"mount point '{path}' is not empty: give an empty directory or a new path (the mount would hide "
                "what it holds)"
            )
        return []
    made = []
    missing = os.path.abspath(path)
    while not os.path.lexists(missing):
        made.append(missing)
        missing = os.path.dirname(missing)
    if not os.path.isdir(missing):
        raise BuildError(f"cannot make the mount point '{path}': '{missing}' is not a directory")
    try:
        os.makedirs(path)
    except OSError as exc:
        raise BuildError(f"cannot make the mount point '{path}': {exc.strerror or exc}") from None
    return made


def cmd_mount(store: Store, args: argparse.Namespace) -> None:
    image = store.resolve(args.image)
    name = None if args.read_only else container_name(image, args.name)
    made = make_mountpoint(args.mountpoint)
    try:
        image_mount(store, image, args.mountpoint, name, owned=False).mount()  # the user unmounts it, not our end
    except BaseException:
        for directory in made:
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        raise
    print(args.mountpoint)


def cmd_umount(mountpoint: str) -> None:
    kind = mount_type(mountpoint)
    if kind is None:
        raise BuildError(f"'{mountpoint}' is not mounted: nothing to do", USAGE_ERROR)
    if kind != UNION_FSTYPE:
        raise BuildError(f"'{mountpoint}' is a {kind} mount, not one 'imagebuild mount' made: it stays mounted")
    UnionMount(mountpoint, ["/"]).unmount()


def cmd_run(store: Store, args: argparse.Namespace) -> int:
    image = store.resolve(args.image)
    spec = runspec.spec(args, image.config.config, os.environ, container.env_files(args.env_file, os.environ))
    for warning in spec.warnings:
        print(f"imagebuild: warning: {warning}", file=sys.stderr)
    name = container_name(image, args.name)
    try:
        return container.run(spec, lambda path, options: image_mount(store, image, path, name, options))
    finally:
        if args.rm:
            shutil.rmtree(os.path.join(store.root, "containers", name), ignore_errors=True)


def cmd_login(args: argparse.Namespace) -> None:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        import getpass

        password = getpass.getpass(f"Password for {args.username}@{args.registry}: ")
    client = registry.Client(args.registry, insecure=args.insecure, credentials=(args.username, password))
    client.request("GET", "/v2/", scope="")  # fails with a clear line when the credentials are wrong
    print(f"Login succeeded; credentials saved in {registry.save_credentials(args.registry, args.username, password)}")


def cmd_lint(args: argparse.Namespace) -> int:
    context = args.context
    dockerfile = find_dockerfile(context, args.file)
    report = lint.lint(dockerfile, context)
    print(lint.render_json(report) if args.format == "json" else lint.render_text(report))
    return 1 if lint.failing(report, lint.Severity[args.fail_on.upper()]) else 0


def analysis(store: Store, image: Image) -> analyze.Report:
    made_by = [h.created_by or "" for h in image.config.history if not h.empty_layer]
    made_by += [""] * (len(image.layers) - len(made_by))
    dirs = [store.layer_dir(layer.diff_id) for layer in image.layers]
    return analyze.analyze(dirs, made_by[: len(dirs)])


def cmd_analyze(store: Store, args: argparse.Namespace) -> int:
    report = analysis(store, store.resolve(args.image))
    if args.layer is not None:
        if not 0 <= args.layer < len(report.layers):
            raise BuildError(f"--layer {args.layer}: the image has layers 0 to {len(report.layers) - 1}")
        layer = report.layers[args.layer]
        if args.tree:
            print(analyze.render_tree(layer))
        else:
            for change in layer.changes:
                print(f"{change.kind:<8} {human(change.size):>9}  /{change.path}")
        return 0
    print(json.dumps(report.to_dict(), indent=2) if args.format == "json" else analyze.render_text(report))
    if args.ci:
        failures = []
        if report.efficiency < args.lowest_efficiency:
            failures.append(f"efficiency {report.efficiency:.1%} is below {args.lowest_efficiency:.1%}")
        if args.highest_wasted_bytes is not None and report.wasted > args.highest_wasted_bytes:
            failures.append(f"{report.wasted} wasted bytes exceed {args.highest_wasted_bytes}")
        if failures:
            print(f"imagebuild: analyze --ci failed: {'; '.join(failures)}", file=sys.stderr)
            return 1
    return 0


def check_archive_output(output: str) -> None:
    if os.path.isdir(output):
        raise BuildError(
            f"-o '{output}' is a directory: give the tarball's file name (or --format oci to write a layout there)"
        )
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise BuildError(f"-o '{output}': the directory '{parent}' does not exist: create it first")


def cmd_export(store: Store, args: argparse.Namespace) -> None:
    image = store.resolve(args.image)
    tags = sorted(t for t, i in store.tags().items() if i == image.id)
    if args.name is not None:
        check_names([args.name], "--name ")
    if args.format == "oci":
        name = args.name or (normalize_tag(args.image) if normalize_tag(args.image) in tags else None)
        transport.export_oci_layout(store, image, name, args.output)
    else:
        check_archive_output(args.output)
        named = [normalize_tag(args.image)] if normalize_tag(args.image) in tags else tags
        tmp = args.output + ".tmp"
        try:
            with open(tmp, "wb") as f:
                transport.export_docker_archive(store, image, named, f)
            os.replace(tmp, args.output)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    print(f"Exported {image.id[7:19]} to {args.output} ({args.format})")


def cmd_import(store: Store, args: argparse.Namespace) -> str:
    check_names(args.tag)
    path, ref = args.path, None
    if not os.path.exists(path) and ":" in path:
        path, ref = path.split(":", 1)
    if os.path.isdir(path):
        image_id = transport.import_oci_layout(store, path, ref, args.tag, print)
    elif os.path.isfile(path):
        image_id = transport.import_docker_archive(store, path, args.tag, print)
    else:
        raise BuildError(f"'{args.path}' does not exist: give an OCI layout directory or a docker-archive tarball")
    return f"Imported {image_id}"


def open_store(root: str) -> Store:
    if os.path.lexists(root) and not os.path.isdir(root):
        raise BuildError(
            f"the image store '{root}' is not a directory: point --root (or $IMAGEBUILD_ROOT) at a directory"
        )
    return Store(root)


def run_command(args: argparse.Namespace) -> int:
    if args.command == "lint":
        return cmd_lint(args)
    store = open_store(args.root or default_root())
    if args.command == "build":
        cmd_build(store, args)
    elif args.command == "images":
        cmd_images(store)
    elif args.command == "inspect":
        print(json.dumps([inspect_doc(store, store.resolve(args.image))], indent=4))
    elif args.command == "history":
        cmd_history(store, store.resolve(args.image))
    elif args.command == "tag":
        check_names([args.name], "")
        store.tag(store.resolve(args.image).id, args.name)
    elif args.command == "rmi":
        cmd_rmi(store, args.images)
    elif args.command == "check":
        problems = store.check(args.repair)
        for problem in problems:
            print(problem)
        if problems and not args.repair:
            print(
                f"imagebuild: {len(problems)} problem(s); 'imagebuild check --repair' removes what is broken",
                file=sys.stderr,
            )
            return 1
        print("store repaired" if problems else "store consistent")
    elif args.command == "prune":
        layers, freed = store.prune()
        print(f"Deleted {layers} layers, freed {human(freed)} of blobs")
    elif args.command == "mount":
        cmd_mount(store, args)
    elif args.command == "umount":
        cmd_umount(args.mountpoint)
    elif args.command == "run":
        return cmd_run(store, args)
    elif args.command == "lint":
        return cmd_lint(args)
    elif args.command == "push":
        ref = registry.Reference.parse(args.ref)
        client = registry.Client(ref.registry, insecure=args.insecure)
        digest = registry.push(store, store.resolve(args.image), ref, client, args.mount_from)
        print(f"Pushed {ref} ({digest}); {len(client.sent)} blob(s) sent")
    elif args.command == "pull":
        check_names(args.tag)
        ref = registry.Reference.parse(args.ref)
        image_id = registry.pull(store, ref, registry.Client(ref.registry, insecure=args.insecure), args.tag, print)
        print(f"Pulled {ref} as {image_id}")
    elif args.command == "login":
        cmd_login(args)
    elif args.command == "analyze":
        return cmd_analyze(store, args)
    elif args.command == "export":
        cmd_export(store, args)
    elif args.command == "import":
        print(cmd_import(store, args))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    try:
        args = parser().parse_args(argv)
    except UsageError as exc:
        print(f"imagebuild: error: {exc}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    try:
        status = run_command(args)
    except DockerfileError as exc:
        print(f"imagebuild: error: {exc}", file=sys.stderr)
        status = 1
    except BuildError as exc:
        print(f"imagebuild: error: {exc}", file=sys.stderr)
        status = exc.status
    except MountError as exc:
        print(f"imagebuild: error: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("imagebuild: interrupted", file=sys.stderr)
        status = 130
    except OSError as exc:
        where = f" '{exc.filename}'" if exc.filename else ""
        print(f"imagebuild: error: {exc.strerror or exc}{where}", file=sys.stderr)
        status = 1
    sys.exit(status)
