"""The filesystem assembled from a checked config: the layers opened, the work dir prepared, the privilege probed,
the UnionFS built. No FUSE here: mount.py serves what this builds, and tests build it without a mount.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable

from .config import MountConfig
from .fetch import load_fetcher
from .layers import FD_CACHE_SIZE, Layer, effective_stat, read_override
from .tree import Tree
from .union import UnionFS
from .upper import Upper
from .whiteout import WhiteoutForm
from .workdir import WORK_SUBDIR, can_chown, chardev_whiteouts_allowed, opaque_xattr_for, prepare_work


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
    fetcher = load_fetcher(config.fetcher, config.fetchspec) if config.fetcher else None
    try:
        if config.upper and config.work:
            layers.append(Layer(config.upper, 0, writable=True, fd_cache=cache))
        for path in config.lowers:
            layers.append(Layer(path, len(layers), writable=False, fd_cache=cache, fetcher=fetcher))
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
