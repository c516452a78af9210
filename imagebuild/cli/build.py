"""`imagebuild build` and `imagebuild lint`: a Dockerfile built into the store, or checked."""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO

from imagebuild import context as build_context
from imagebuild import lint
from imagebuild.analyze import human
from imagebuild.builder import outputs, remotecache, secrets
from imagebuild.builder.executor import Builder, Options
from imagebuild.cli.checks import check_names, epoch, find_dockerfile, key_values
from imagebuild.cli.exchange import registry_progress
from imagebuild.cli.images import analysis
from imagebuild.cli.parser import RUN_FS
from imagebuild.dockerfile import parse_file
from imagebuild.errors import BuildError
from imagebuild.store.estargz import store_converted
from imagebuild.store.images import Store, normalize_tag


def warn(text: str) -> None:
    print(f"imagebuild: warning: {text}", file=sys.stderr, flush=True)


def cmd_build(store: Store, args: argparse.Namespace, stdout: BinaryIO) -> None:
    check_names(args.tag)
    wanted = [outputs.parse(text) for text in args.output]
    outputs.check(wanted)
    timestamp = epoch(args.timestamp)
    root = args.context
    dockerfile = find_dockerfile(root, args.file)
    build_args = key_values(args.build_arg, "--build-arg")
    df = parse_file(dockerfile)
    ctx = build_context.load(root)
    print(f"Build context: {len(ctx.entries)} entries, {human(ctx.size)}", flush=True)
    if ctx.size > build_context.LARGE_CONTEXT:
        print(
            f"warning: the build context is large ({human(ctx.size)}): list what the image does not need in "
            f"{os.path.join(root, '.dockerignore')}",
            file=sys.stderr,
        )
    run_fs = run_fs_choice(args.run_fs)
    options = Options(
        build_args,
        args.target,
        args.no_cache,
        args.explain_cache,
        timestamp,
        args.insecure,
        registry_progress(),
        args.jobs,
        secrets.parse(args.secret),
        run_fs=run_fs,
    )
    remotecache.check_specs(args.cache_from, args.cache_to)
    if args.cache_from:
        sources = remotecache.Sources(store, args.cache_from, args.insecure, warn)
        options.cache_from = sources.lookup
        print(f"Cache: {sources.records} step(s) known in {', '.join(args.cache_from)}", flush=True)
    builder = Builder(store, ctx, df, options, sys.stdout)
    image_id, state = builder.build()
    for line in remotecache.export(store, state, builder.stages.values(), args.cache_to, args.insecure, warn):
        print(line)
    layered = [r for r in builder.reports if r.cached is not None]
    hits = sum(1 for r in layered if r.cached)
    print(f"Cache: {hits} of {len(layered)} layer steps reused")
    print(efficiency_summary(store, image_id))
    if args.estargz:
        plain = image_id
        image_id = store_converted(store, store.resolve(image_id), [])
        print(f"eStargz: {plain[7:19]} rewritten with seekable layers as {image_id[7:19]}")
    print(f"Successfully built {image_id}")
    for tag in args.tag:
        store.tag(image_id, tag)
        print(f"Successfully tagged {normalize_tag(tag)}")
    if not args.tag:
        print(f"The image has no name: use 'imagebuild tag {image_id[7:19]} NAME' to give it one")
    for output in wanted:
        outputs.write(store, store.resolve(image_id), output, [normalize_tag(t) for t in args.tag], stdout)
        where = "standard output" if output.to_stdout else output.dest
        print(f"Wrote the {'image' if output.kind == 'oci' else 'rootfs'} to {where} ({output.kind})")


def run_fs_choice(flag: str | None) -> str:
    """--run-fs, else $IMAGEBUILD_RUN_FS, else auto; `overlay` only as root (ordinary users' RUN steps use unionfs)."""
    choice = flag or os.environ.get("IMAGEBUILD_RUN_FS") or "auto"
    where = "--run-fs" if flag else "IMAGEBUILD_RUN_FS"
    if choice not in RUN_FS:
        raise BuildError(f"{where}={choice}: use one of {', '.join(RUN_FS)}")
    if choice == "overlay" and os.geteuid() != 0:
        raise BuildError(
            f"{where}=overlay: kernel overlayfs for RUN steps needs root; an ordinary user's RUN steps run on unionfs"
        )
    return choice


def efficiency_summary(store: Store, image_id: str) -> str:
    """The build's line on the image's efficiency; worked out once per image (a no-op rebuild reads it back)."""
    known = store.summary_get(image_id)
    if known is not None and isinstance(known.get("line"), str):
        return str(known["line"])
    report = analysis(store, store.resolve(image_id))
    summary = f"Efficiency: {report.efficiency:.1%}, {human(report.wasted)} of {human(report.total)} wasted"
    if report.wasted:
        summary += f" (files deleted or overwritten by later layers): see 'imagebuild analyze {image_id[7:19]}'"
    store.summary_put(image_id, {"line": summary})
    return summary


def cmd_lint(args: argparse.Namespace) -> int:
    context = args.context
    dockerfile = find_dockerfile(context, args.file)
    report = lint.lint(dockerfile, context)
    print(lint.render_json(report) if args.format == "json" else lint.render_text(report))
    return 1 if lint.failing(report, lint.Severity[args.fail_on.upper()]) else 0
