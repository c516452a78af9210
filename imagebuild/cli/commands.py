"""The entry point: parse argv, run the subcommand, and turn every error a user can cause (imagebuild's
root, unionfs's errors, OSError) into one line and an exit status."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence

from imagebuild.analyze import human
from imagebuild.builder import outputs
from imagebuild.cli.build import cmd_build, cmd_lint
from imagebuild.cli.checks import check_names
from imagebuild.cli.containers import cmd_mount, cmd_umount
from imagebuild.cli.exchange import cmd_export, cmd_import, cmd_login, registry_progress
from imagebuild.cli.images import cmd_analyze, cmd_history, cmd_images, cmd_rmi, inspect_doc
from imagebuild.cli.parser import parser
from imagebuild.cli.run import cmd_run
from imagebuild.errors import BuildError, ImagebuildError
from imagebuild.lazy.cache import limit_from_env
from imagebuild.store import caches
from imagebuild.store.images import Store, default_root
from imagebuild.transport import registry
from unionfs import ERRORS as UNIONFS_ERRORS


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
        stdout = sys.stdout.buffer  # `-o -` writes there; the build's own output then goes to stderr, as buildx's
        to_stdout = any(outputs.parse(text).to_stdout for text in args.output)
        with contextlib.redirect_stdout(sys.stderr) if to_stdout else contextlib.nullcontext():
            cmd_build(store, args, stdout)
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
        cache_limit = limit_from_env()  # (a bad IMAGEBUILD_LAZY_CACHE_SIZE stops prune before it removes anything)
        layers, freed = store.prune()
        print(f"Deleted {layers} layers, freed {human(freed)} of blobs")
        skeletons, lazy_files, fetched = store.prune_lazy(cache_limit)
        if skeletons or lazy_files:
            print(
                f"Deleted {skeletons} lazy layer skeletons and {lazy_files} lazy mount files (TOCs, specs, leftovers)"
            )
        if fetched:
            print(f"Freed {human(fetched)} of lazily fetched files beyond the cache's limit")
        if args.cache:
            removed, cache_bytes, busy = caches.prune(store.root)
            in_use = f" ({busy} in use by a build, kept)" if busy else ""
            print(f"Deleted {removed} RUN caches, freed {human(cache_bytes)}{in_use}")
    elif args.command == "mount":
        cmd_mount(store, args)
    elif args.command == "umount":
        cmd_umount(args.mountpoint)
    elif args.command == "run":
        return cmd_run(store, args)
    elif args.command == "push":
        ref = registry.Reference.parse(args.ref)
        client = registry.Client(ref.registry, insecure=args.insecure, progress=registry_progress())
        push = registry.push_estargz if args.estargz else registry.push
        digest = push(store, store.resolve(args.image), ref, client, args.mount_from)
        print(f"Pushed {ref} ({digest}); {len(client.sent)} blob(s) sent")
    elif args.command == "pull":
        check_names(args.tag)
        ref = registry.Reference.parse(args.ref)
        image_id = registry.pull(
            store,
            ref,
            registry.Client(ref.registry, insecure=args.insecure, progress=registry_progress()),
            args.tag,
            print,
        )
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
        status = run_command(parser().parse_args(argv))
    except ImagebuildError as exc:  # the root of imagebuild's errors
        print(f"imagebuild: error: {exc}", file=sys.stderr)
        status = exc.status
    except UNIONFS_ERRORS as exc:  # unionfs's (its root names the status `exit_status`)
        print(f"imagebuild: error: {exc}", file=sys.stderr)
        status = getattr(exc, "exit_status", 1)
    except KeyboardInterrupt:
        print("imagebuild: interrupted", file=sys.stderr)
        status = 130
    except OSError as exc:
        where = f" '{exc.filename}'" if exc.filename else ""
        print(f"imagebuild: error: {exc.strerror or exc}{where}", file=sys.stderr)
        status = 1
    sys.exit(status)
