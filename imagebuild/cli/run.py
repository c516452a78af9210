"""`imagebuild run`: a command in an image's rootfs (a union mount with a container layer), in a sandbox, with
`docker run`'s everyday flags (imagebuild/runspec.py reads them, imagebuild/container.py carries them out)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from imagebuild import container, runspec
from imagebuild.cli.containers import container_name, image_mount
from imagebuild.store.images import Store


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
