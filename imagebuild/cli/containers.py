"""`imagebuild mount` and `imagebuild umount`, and the container layers and union mounts of an image that
`run` uses too."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Sequence

from imagebuild import mountinfo
from imagebuild.cli.parser import USAGE_ERROR
from imagebuild.errors import BuildError
from imagebuild.lazy.prepare import LazyImage, prepare
from imagebuild.store.images import Image, Store
from unionfs import UnionMount


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
    store: Store,
    image: Image,
    mountpoint: str,
    name: str | None,
    options: Sequence[str] = (),
    owned: bool = True,
    lazy: LazyImage | None = None,
) -> UnionMount:
    """The union of an image's layers (and container `name`'s layer). `owned`: it goes when this process does.
    `lazy`: the image read from a registry, its layers fetched as they are read."""
    lowers = lazy.lowers if lazy is not None else store.lower_dirs(image.layers)
    options = [*options, *(lazy.options if lazy is not None else ())]
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
    for mounted, fstype in mountinfo.mounts():
        if mounted == point:
            found = fstype
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


def lazy_image(store: Store, args: argparse.Namespace) -> LazyImage | None:
    """With --lazy, the image read from its registry (the note on layers pulled whole goes to stderr)."""
    if not args.lazy:
        if args.insecure:
            raise BuildError("--insecure goes with --lazy (an image from a registry): add --lazy", USAGE_ERROR)
        return None
    return prepare(store, args.image, args.insecure, lambda line: print(f"imagebuild: {line}", file=sys.stderr))


def cmd_mount(store: Store, args: argparse.Namespace) -> None:
    lazy = lazy_image(store, args)
    image = lazy.image if lazy is not None else store.resolve(args.image)
    name = None if args.read_only else container_name(image, args.name)
    made = make_mountpoint(args.mountpoint)
    try:
        # the user unmounts it, not our end
        image_mount(store, image, args.mountpoint, name, owned=False, lazy=lazy).mount()
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
    if kind != mountinfo.UNION_FSTYPE:
        raise BuildError(f"'{mountpoint}' is a {kind} mount, not one 'imagebuild mount' made: it stays mounted")
    UnionMount(mountpoint, ["/"]).unmount()
