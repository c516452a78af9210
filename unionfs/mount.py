"""Mount lifecycle: build the filesystem from a checked config, serve it with trio, unmount cleanly."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

import pyfuse3
import trio

from .config import MountConfig
from .errorlog import IoErrors
from .errors import UnmountError
from .filesystem import build
from .ops import UnionOperations
from .unmount import top_mount, unmount

log = logging.getLogger("unionfs")


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


def serve(
    config: MountConfig, ready: Callable[[], None], owner_fd: int | None = None, io_errors: IoErrors | None = None
) -> None:
    """Mount, call `ready` once the mount exists, serve until unmounted, signalled or (with `owner_fd`) left by
    the owner, then clean up. Requests answered EIO because of a bug are recorded by `io_errors` (errorlog.py)."""
    fs, close = build(config)
    privileged = fs.upper.privileged if fs.upper is not None else os.geteuid() == 0
    check_others = config.allow_other and not privileged
    ops = UnionOperations(fs, cache_timeout(config), config.ids, check_others, io_errors)
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
