"""The commands that move images between the store and elsewhere: export, import, login, and the progress
of push and pull."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable

from imagebuild import transport
from imagebuild.cli.checks import check_names
from imagebuild.errors import BuildError
from imagebuild.store.images import Store, normalize_tag
from imagebuild.transport import registry


def registry_progress() -> Callable[[str], None] | None:
    """Where a registry client tells its progress: stderr, line by line, when a person watches it."""
    if not sys.stderr.isatty():
        return None
    return lambda text: print(text, file=sys.stderr, flush=True)


def cmd_login(args: argparse.Namespace) -> None:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        import getpass

        password = getpass.getpass(f"Password for {args.username}@{args.registry}: ")
    client = registry.Client(args.registry, insecure=args.insecure, credentials=(args.username, password))
    client.request("GET", "/v2/", scope="")  # fails with a clear line when the credentials are wrong
    print(f"Login succeeded; credentials saved in {registry.save_credentials(args.registry, args.username, password)}")


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
