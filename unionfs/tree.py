"""Union resolution: a path looked up through the layers, and a directory's merged listing. No FUSE here.

A name resolves to the first layer, from the top, that has it; a whiteout in a layer hides the name in every
layer below. A directory merges with directories of the same name below it until a layer marks it opaque or
holds a non-directory there. Whiteouts and markers never appear in the result.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from .layers import DirView, LayerSource, Path
from .whiteout import is_whiteout_name

DIR_CACHE = 16384


@dataclass(frozen=True, slots=True)
class Node:
    """One entry of the merged view."""

    path: Path
    layer: int  # index of the layer holding the entry shown
    st: os.stat_result  # its lstat there (fresh at resolution time)
    layers: tuple[int, ...]  # directories: the layers merged, top first; others: (layer,)
    meta_only: bool = False  # an upper file whose data is still the lower file's (metacopy)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def name(self) -> str:
        return self.path[-1] if self.path else ""


class Tree:
    """The merged view of `layers` (top first). When `writable`, layers[0] is the upper."""

    def __init__(self, layers: Sequence[LayerSource]) -> None:
        self.layers = layers
        self.writable = bool(layers) and layers[0].writable
        # Directories by path, for resolving what lies below them: a lookup needs only a directory's path and
        # the layers it merges, which change only when the upper's directory tree is reshaped (reshaped()).
        self._dirs: dict[Path, Node] = {}
        self.shape = 0  # moved by every reshaped(): what is known of directories by path holds while it stands

    def reshaped(self) -> None:
        """A directory was created, removed, moved or marked opaque in the upper: forget cached directories."""
        self._dirs.clear()
        self.shape += 1

    def root(self) -> Node:
        contributing: list[int] = []
        for layer in self.layers:
            view = layer.view(())
            if view is None:
                continue
            contributing.append(layer.index)
            if view.opaque:
                break
        top = contributing[0]
        return Node((), top, self.layers[top].root_stat(), tuple(contributing))

    def lookup(self, parent: Node, name: str, *, below_upper: bool = False) -> Node | None:
        """The child `name` of directory `parent`, or None. With below_upper, ignore the upper layer."""
        if is_whiteout_name(name):
            return None
        path = (*parent.path, name)
        found: tuple[int, os.stat_result] | None = None
        merged: list[int] = []
        for index in parent.layers:
            if below_upper and index == 0 and self.writable:
                continue
            view = self.layers[index].view(parent.path)
            if view is None:
                continue
            st = view.entry(name)
            if st is not None:
                if found is None and stat.S_ISDIR(st.st_mode):
                    known = self._dirs.get(path)
                    if known is not None and known.layer == index:
                        # which layers it merges holds until the tree is reshaped: only its stat is news (a
                        # directory whose entries changed, asked for again), without probing its opacity again
                        return Node(path, index, st, known.layers)
                if found is None:
                    found = (index, st)
                    merged.append(index)
                    if not stat.S_ISDIR(st.st_mode) or self._child_opaque(index, path):
                        break
                elif stat.S_ISDIR(st.st_mode):
                    merged.append(index)
                    if self._child_opaque(index, path):
                        break
                else:
                    break
            if view.whited(name):
                break
        if found is None:
            return None
        index, st = found
        meta_only = False
        if index == 0 and self.writable and stat.S_ISREG(st.st_mode):
            meta_only = self.layers[0].is_metacopy(path, st)
        return Node(path, index, st, tuple(merged), meta_only)

    def _child_opaque(self, index: int, path: Path) -> bool:
        view = self.layers[index].view(path)
        return view is not None and view.opaque

    def resolve(self, path: Path) -> Node | None:
        """The entry at `path`, looked up afresh (its parents may come from the directory cache)."""
        if not path:
            return self.root()
        parent = self.directory(path[:-1])
        return None if parent is None else self.lookup(parent, path[-1])

    def directory(self, path: Path) -> Node | None:
        """The directory at `path` as last resolved, for its path, layers, mode and owner: its times and size
        may be older (entries made in it since do not reshape it). None when `path` is not a directory."""
        node = self._dirs.get(path)
        if node is None:
            node = self.resolve(path)
            if node is None or not node.is_dir:
                return None
            if len(self._dirs) >= DIR_CACHE:
                self._dirs.clear()
            self._dirs[path] = node
        return node

    def views(self, node: Node) -> list[DirView]:
        result = []
        for index in node.layers:
            view = self.layers[index].view(node.path)
            if view is not None:
                result.append(view)
        return result

    def children(self, node: Node) -> list[Node]:
        """The merged listing of directory `node`, sorted by name (a stable order for readdir)."""
        names: set[str] = set()
        for view in self.views(node):
            names.update(view.names())
        result = []
        for name in sorted(names):
            child = self.lookup(node, name)
            if child is not None:
                result.append(child)
        return result

    def is_empty(self, node: Node) -> bool:
        for view in self.views(node):
            for name in view.names():
                if self.lookup(node, name) is not None:
                    return False
        return True

    def lower_has(self, parent: Node, name: str) -> bool:
        """Whether a layer below the upper shows `name` in `parent`: removing it then needs a whiteout."""
        return self.lookup(parent, name, below_upper=True) is not None
