"""`imagebuild run`: a command in an image's rootfs (a union mount with a container layer), in a sandbox, with
`docker run`'s everyday flags (imagebuild/runspec.py reads them, imagebuild/container.py carries them out)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from imagebuild import container, runspec
from imagebuild.cli.containers import container_name, image_mount, lazy_image
from imagebuild.store.images import Store


def cmd_run(store: Store, args: argparse.Namespace) -> int:
    lazy = lazy_image(store, args)
    image = lazy.image if lazy is not None else store.resolve(args.image)
    spec = runspec.spec(args, image.config.config, os.environ, container.env_files(args.env_file, os.environ))
    for warning in spec.warnings:
        print(f"imagebuild: warning: {warning}", file=sys.stderr)
    name = container_name(image, args.name)
    logged = _size(lazy.log) if lazy is not None else 0
    try:
        return container.run(spec, lambda path, options: image_mount(store, image, path, name, options, lazy=lazy))
    finally:
        if lazy is not None:
            _show_log(lazy.log, logged)
        if args.rm:
            shutil.rmtree(os.path.join(store.root, "containers", name), ignore_errors=True)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _show_log(path: str, start: int) -> None:
    """What the lazy fetcher logged while the command ran (files it could not fetch), on stderr."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return
    for line in text.splitlines():
        print(line.partition(" ")[2] or line, file=sys.stderr)
