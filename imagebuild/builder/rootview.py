"""Trees read by absolute path with `/` at their root (an image's rootfs, the build context), and a directory on
disk read as one.

A tree's symlinks are never followed on the host: every component is opened with O_NOFOLLOW, and paths that
cross a symlink are resolved first, inside the tree (`copydest.resolve`). A symlink `etc -> /etc` in an image
therefore reads the image's /etc, never the host's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from typing import Protocol

from imagebuild.builder.copydest import Node, TreeView, resolve

_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
TEXT_LIMIT = 4 << 20  # /etc/passwd and /etc/group are read whole; a bigger one is not a real one


class FileTree(TreeView, Protocol):
    """A tree whose directories can be listed and whose files can be opened (paths resolved: no symlinks)."""

    def children(self, path: str) -> list[str]: ...

    def open(self, path: str, flags: int = os.O_RDONLY) -> int: ...


def node_of(st: os.stat_result, target: str = "") -> Node:
    return Node(st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, target)


def read_text(tree: FileTree, path: str) -> str | None:
    """A text file of the tree (/etc/passwd), its path resolved inside the tree; None when it is not there."""
    resolved = resolve(path, tree)
    if resolved.node is None or not stat.S_ISREG(resolved.node.mode):
        return None
    fd = tree.open(resolved.path)
    try:
        data = os.read(fd, TEXT_LIMIT)
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")


class RootView:
    """The directory `root` as a tree."""

    def __init__(self, root: str) -> None:
        self.root = root

    @contextlib.contextmanager
    def _parent(self, path: str) -> Iterator[tuple[int, str]]:
        """An fd of the directory holding `path` (every component opened without following) and the last name."""
        parts = [p for p in path.split("/") if p]
        fd = os.open(self.root, _O_PATH_DIR)
        try:
            for part in parts[:-1]:
                child = os.open(part, _O_PATH_DIR, dir_fd=fd)
                os.close(fd)
                fd = child
            yield fd, parts[-1] if parts else "."
        finally:
            os.close(fd)

    def node(self, path: str) -> Node | None:
        try:
            with self._parent(path) as (fd, name):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                target = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else ""
        except OSError as exc:
            if exc.errno in _GONE:
                return None
            raise
        return node_of(st, target)

    def children(self, path: str) -> list[str]:
        """The names in a directory (the path must be resolved: no symlink on the way)."""
        fd = self.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def open(self, path: str, flags: int = os.O_RDONLY) -> int:
        """An fd of the entry at a resolved path, the last component not followed either."""
        with self._parent(path) as (fd, name):
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
