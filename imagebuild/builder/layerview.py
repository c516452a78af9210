"""A stage's rootfs read straight from its layer directories, through unionfs's own union resolution.

COPY and ADD read the image below them (is the destination a directory there? whose is it? what does its
/etc/passwd say?) and `--from` stages. A read-only union mount would show the same tree, but every mount costs
a filesystem daemon's start and exit, more than a second per step, and needs /dev/fuse. `unionfs.tree` is the
resolution that mount runs (whiteouts, opaque directories, ownership records; no FUSE in it), so reading the
layers through it gives exactly the mount's view. Nothing here writes: the layers are immutable lowers.
"""

from __future__ import annotations

import errno
import os
import stat
from types import TracebackType

from imagebuild.builder.copydest import Node
from imagebuild.builder.rootview import node_of
from unionfs import Layer, Tree
from unionfs import Node as UnionNode

_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


class LayersView:
    """The merged tree of `lowers` (layer directories, top first); no lowers is an empty image."""

    def __init__(self, lowers: list[str]) -> None:
        self._layers: list[Layer] = []
        try:
            for index, path in enumerate(lowers):
                self._layers.append(Layer(path, index, writable=False))
        except BaseException:
            self.close()
            raise
        self._tree = Tree(self._layers) if self._layers else None

    def close(self) -> None:
        for layer in self._layers:
            layer.close()
        self._layers = []

    def __enter__(self) -> LayersView:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _find(self, path: str) -> UnionNode | None:
        if self._tree is None:
            return None
        try:
            return self._tree.resolve(tuple(p for p in path.split("/") if p))
        except OSError as exc:
            if exc.errno in _GONE:
                return None
            raise
        finally:
            for layer in self._layers:
                layer.end_request()

    def _dirfd(self, found: UnionNode) -> int:
        """A borrowed fd of the directory holding `found` in the layer that shows it."""
        return self._layers[found.layer].dirfd(found.path[:-1])

    def node(self, path: str) -> Node | None:
        found = self._find(path)
        if found is None:
            return None
        target = os.readlink(found.name, dir_fd=self._dirfd(found)) if stat.S_ISLNK(found.st.st_mode) else ""
        return node_of(found.st, target)

    def children(self, path: str) -> list[str]:
        found = self._find(path)
        if found is None or self._tree is None or not found.is_dir:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory in the image", path)
        try:
            return [child.name for child in self._tree.children(found)]
        finally:
            for layer in self._layers:
                layer.end_request()

    def open(self, path: str, flags: int = os.O_RDONLY) -> int:
        found = self._find(path)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "not in the image", path)
        if not found.path:
            return os.open(".", flags | os.O_CLOEXEC, dir_fd=self._layers[found.layer].root_fd)
        return os.open(found.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dirfd(found))
