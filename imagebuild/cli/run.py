"""`imagebuild run`: a command in an image's rootfs (a union mount with a container layer), in a sandbox."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
from types import FrameType

from imagebuild import sandbox, userns
from imagebuild.cli.checks import key_values
from imagebuild.cli.containers import container_name, image_mount
from imagebuild.errors import BuildError
from imagebuild.store.images import Store
from unionfs import MountError


def cmd_run(store: Store, args: argparse.Namespace) -> int:
    image = store.resolve(args.image)
    config = image.config.config
    argv = list(args.cmd) if args.cmd else [*(config.entrypoint or []), *(config.cmd or [])]
    if args.cmd and config.entrypoint:
        argv = [*config.entrypoint, *args.cmd]
    if not argv:
        raise BuildError(f"image '{args.image}' has no ENTRYPOINT or CMD: give a command to run")
    name = container_name(image, args.name)
    ranges = userns.ranges()
    namespace = None if ranges is None else userns.Namespace(*ranges)
    rootfs = sandbox.mountpoint(private=namespace is None)
    mount = image_mount(store, image, rootfs, name, sandbox.union_options(config.user, namespace is not None))
    env = {**dict(e.partition("=")[::2] for e in config.env), **key_values(args.env, "-e")}
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    # SIGTERM/SIGINT stop the command; they never cut the cleanup short (unmount, --rm)
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    names = sandbox.names_dir()
    try:
        if namespace is not None:
            mount.enter = namespace.open().daemon()
        mount.mount()
        if namespace is None:
            user = sandbox.resolve_user(rootfs, config.user)
            binds = sandbox.name_files(names, lambda name: os.path.islink(os.path.join(rootfs, name)))
            child = sandbox.spawn(rootfs, argv, env, config.working_dir or "/", user, binds=binds)
        else:
            namespace.makedirs(*(os.path.join(rootfs, d) for d in ("dev", "proc", "etc")))
            user = sandbox.resolve_user(rootfs, config.user, namespace.read)
            binds = sandbox.name_files(names, lambda name: namespace.is_link(os.path.join(rootfs, name)))
            namespace.create(*(os.path.join(rootfs, target.lstrip("/")) for _, target in binds))
            child = sandbox.spawn(rootfs, argv, env, config.working_dir or "/", user, namespace.enter(), binds)
        status = child.wait()
    except MountError as exc:
        raise BuildError(f"cannot mount image '{args.image}': {exc}") from None
    finally:
        try:
            mount.unmount()
            if namespace is not None:
                namespace.close()
            sandbox.remove_mountpoint(rootfs)
            shutil.rmtree(names, ignore_errors=True)
            if args.rm:
                shutil.rmtree(os.path.join(store.root, "containers", name), ignore_errors=True)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    return status if status >= 0 else 128 - status
