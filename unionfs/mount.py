"""Mount lifecycle: build the filesystem from a checked config, serve it with trio, unmount cleanly."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
from collections.abc import Callable

import pyfuse3
import trio

from .config import MountConfig
from .copyup import WORK_SUBDIR, Upper, can_chown, chardev_whiteouts_allowed, opaque_xattr_for
from .layers import FD_CACHE_SIZE, Layer, effective_stat, read_override
from .ops import UnionOperations
from .tree import Tree
from .union import UnionFS
from .unmount import UnmountError, top_mount, unmount
from .whiteout import WhiteoutForm

log = logging.getLogger("unionfs")


def prepare_work(work: str) -> None:
    """Our staging area inside the work dir, emptied of whatever a crash left behind."""
    ours = os.path.join(work, WORK_SUBDIR)
    if os.path.isdir(ours):
        shutil.rmtree(ours)
    os.mkdir(ours, 0o700)


def raise_fd_limit() -> int:
    """Directory fds are cached and a big copy-up opens many: take the hard limit, as fuse-overlayfs does.
    Returns the limit we now have."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def fd_cache_size(limit: int, layers: int) -> int:
    """Per-layer directory fd cache: at most a third of the fd limit in all, so open files always have room."""
    return max(4, min(FD_CACHE_SIZE, limit // (3 * max(layers, 1))))


def build(config: MountConfig) -> tuple[UnionFS, Callable[[], None]]:
    """Open every layer and the work dir; returns the filesystem and a function that closes it all."""
    cache = fd_cache_size(raise_fd_limit(), len(config.lowers) + 1)
    old_umask = os.umask(0)  # modes are set explicitly; the caller's umask was applied by the kernel
    layers: list[Layer] = []
    upper: Upper | None = None
    try:
        if config.upper and config.work:
            layers.append(Layer(config.upper, 0, writable=True, fd_cache=cache))
        for path in config.lowers:
            layers.append(Layer(path, len(layers), writable=False, fd_cache=cache))
        tree = Tree(layers)
        if config.upper and config.work:
            prepare_work(config.work)
            work_fd = os.open(os.path.join(config.work, WORK_SUBDIR), os.O_RDONLY | os.O_DIRECTORY)
            try:
                if config.whiteout == "auto":
                    form = WhiteoutForm.CHARDEV if chardev_whiteouts_allowed(work_fd) else WhiteoutForm.FILE
                else:
                    form = WhiteoutForm(config.whiteout)
                opaque = opaque_xattr_for(work_fd)
                privileged = can_chown(work_fd)
            finally:
                os.close(work_fd)
            upper = Upper(tree, config.work, form, opaque, config.fsync, config.metacopy, privileged)
            if not privileged:
                mark_recorded_layer(upper)
    except BaseException:
        for layer in layers:
            layer.close()
        os.umask(old_umask)
        raise

    def close() -> None:
        if upper is not None:
            upper.close()
        for layer in layers:
            layer.close()

    return UnionFS(tree, upper), close


def mark_recorded_layer(upper: Upper) -> None:
    """Give the upper's root an ownership record, as containers/storage marks its rootless layers: other
    readers (fuse-overlayfs) honour a layer's records only when its root carries one."""
    root_fd = upper.layer.root_fd
    if read_override(root_fd, None) is None:
        upper.record_owner(root_fd, "", effective_stat(root_fd, None, os.fstat(root_fd)))


def fuse_options(config: MountConfig, privileged: bool) -> set[str]:
    """Privileged, the kernel checks permissions against what we show. Unprivileged, the mounting user is root
    of its own mount (as under fakeroot) and no check applies to it; ops.py checks other users itself."""
    options = {"fsname=unionfs", "subtype=unionfs"}
    if privileged:
        options.add("default_permissions")
    if config.allow_other:
        options.add("allow_other")
    if config.read_only or config.upper is None:
        options.add("ro")
    return options


def cache_timeout(config: MountConfig) -> float:
    """How long the kernel trusts entries, attributes and failed lookups, in seconds."""
    if config.timeout is not None:
        return config.timeout
    return 3600.0 if config.upper is None else 300.0


async def stop_when_owner_gone(owner_fd: int) -> None:
    """Unmount, as SIGTERM does, once the owner is gone: `owner_fd` is the read end of a pipe whose write end only
    the owner holds, so it reads end-of-file when the owner's last copy closes, however the owner ended (exit,
    SIGKILL, the OOM killer).

    A pipe rather than a pidfd: end-of-file cannot be mistaken for another process (a pid read from argv and
    opened later can be reused in between; the inherited pipe exists before the daemon does), it survives the
    fork and exec between the owner and us with nothing to pass but an fd, and it needs no pidfd_open (Linux
    5.3+, refused by some container seccomp profiles). Nothing is written to the pipe; bytes that come are
    read and ignored."""
    os.set_blocking(owner_fd, False)
    while True:
        await trio.lowlevel.wait_readable(owner_fd)
        try:
            if not os.read(owner_fd, 4096):
                break
        except BlockingIOError:
            continue
        except OSError as exc:
            log.error("owner fd %d: %s: unmounting", owner_fd, exc)
            break
    log.info("owner gone (end of file on fd %d): unmounting", owner_fd)
    pyfuse3.terminate()


async def _serve(owner_fd: int | None) -> None:
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async for signum in signals:
                    log.info("signal %d: unmounting", signum)
                    pyfuse3.terminate()
                    return

        nursery.start_soon(stop_on_signal)
        if owner_fd is not None:
            nursery.start_soon(stop_when_owner_gone, owner_fd)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def serve(config: MountConfig, ready: Callable[[], None], owner_fd: int | None = None) -> None:
    """Mount, call `ready` once the mount exists, serve until unmounted, signalled or (with `owner_fd`) left by
    the owner, then clean up."""
    fs, close = build(config)
    privileged = fs.upper.privileged if fs.upper is not None else os.geteuid() == 0
    ops = UnionOperations(fs, cache_timeout(config), config.ids, check_others=config.allow_other and not privileged)
    # Privileged, the kernel checks permissions (default_permissions): FUSE_POSIX_ACL has it honour ACL entries
    # too, reading each inode's ACL once. Unprivileged it must not: it would turn default_permissions on.
    ops.enable_acl = privileged
    ops.sync_files = config.fsync
    try:
        pyfuse3.init(ops, config.mountpoint, fuse_options(config, privileged))
    except BaseException:
        close()
        raise
    ours: int | None = None
    try:
        ours = top_mount(config.mountpoint)
        ready()
        trio.run(_serve, owner_fd)
    finally:
        try:
            pyfuse3.close(unmount=True)
        finally:
            close()
            detach_if_left(config.mountpoint, ours)


def detach_if_left(mountpoint: str, ours: int | None) -> None:
    """pyfuse3 unmounts through `fusermount3 -u -z`, which fails for an ordinary user where /etc/mtab is missing,
    and says nothing. Our mount is dead by now (its session is closed): detach it with the tools that work."""
    if ours is None or top_mount(mountpoint) != ours:
        return
    try:
        unmount(mountpoint, lazy=True)
    except UnmountError as exc:
        log.error("%s", exc)
