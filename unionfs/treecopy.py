"""Copying a merged directory whole (what a directory rename takes): planned on the request loop a directory at a
time (TreePlanner), then built under the work dir through fds of its own, so that a worker thread may build it
while requests go on (build_tree). No FUSE here.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .layers import DIR_FLAGS, OpenDir, Path
from .tree import Node, Tree

if TYPE_CHECKING:
    from .upper import Upper


@dataclass(slots=True)
class TreePlan:
    """A merged directory to copy whole, with its merged children as they were listed: directories as plans of
    their own, files (upper ones, whole: no metadata-only ones) as nodes."""

    node: Node
    children: list[TreePlan | Node]


class TreePlanner:
    """Plans the copy of merged directory `node`: its tree as it stands, listed one directory per step so that
    the request loop can serve others in between, and the files in it to copy up before the tree is copied
    (`first`): metadata-only files, whose data must move with them, and lower files with more than one link,
    whose every name must keep sharing one file."""

    def __init__(self, tree: Tree, node: Node) -> None:
        self.tree = tree
        self.plan = TreePlan(node, [])
        self.first: list[Node] = []
        self._todo = [self.plan]

    def step(self) -> bool:
        """List one more directory; False once the whole tree is planned."""
        if not self._todo:
            return False
        plan = self._todo.pop()
        for child in self.tree.children(plan.node):
            if child.is_dir:
                below = TreePlan(child, [])
                plan.children.append(below)
                self._todo.append(below)
                continue
            if child.meta_only or (child.layer != 0 and child.st.st_nlink > 1):
                self.first.append(child)
            plan.children.append(child)
        return True

    def run(self) -> TreePlanner:
        while self.step():
            pass
        return self


@dataclass(slots=True)
class BuiltTree:
    """A copy of a planned tree under the work dir (`tmp`), and what Upper.alias must hear about its entries."""

    tmp: str
    aliases: list[tuple[os.stat_result, Node]]


def copy_tree(upper: Upper, node: Node) -> str:
    """A full copy of the merged directory `node` under the work dir, made here and now; returns its name
    there. (A rename copies trees off the request loop: TreePlanner, build_tree, adopt.)"""
    planner = TreePlanner(upper.tree, node).run()
    if planner.first:
        for child in planner.first:
            current = upper.tree.resolve(child.path)
            if current is not None:
                upper.copy_up(current)
        planner = TreePlanner(upper.tree, node).run()
    built = build_tree(upper, planner.plan)
    adopt(upper, built)
    return built.tmp


def build_tree(upper: Upper, plan: TreePlan) -> BuiltTree:
    """Copy a planned tree under the work dir: directories and lower files anew, upper files by a second
    link (no copy, same inode; the original name stays until the move is complete). It works only through
    fds it opens itself, so it may run in a worker thread while requests go on, as long as none of them
    changes the tree meanwhile (what an exclusive lease of pathlocks is for)."""
    node = plan.node
    tmp = upper.tmpname()
    aliases: list[tuple[os.stat_result, Node]] = []
    with contextlib.ExitStack() as fds:
        sources = {index: fds.enter_context(_open_dir(upper.tree, index, node.path)) for index in node.layers}
        above = fds.enter_context(_open_dir(upper.tree, node.layer, node.path[:-1])) if node.path else None
        with upper.staging(tmp):
            _build_dir(upper, plan, upper.work_fd, tmp, sources, above, aliases)
    return BuiltTree(tmp, aliases)


@contextlib.contextmanager
def _open_dir(tree: Tree, index: int, path: Path) -> Iterator[int]:
    fd = tree.layers[index].open_dir(path)
    try:
        yield fd
    finally:
        os.close(fd)


def _build_dir(
    upper: Upper,
    plan: TreePlan,
    dst_dir: int,
    name: str,
    sources: dict[int, int],
    above: int | None,
    aliases: list[tuple[os.stat_result, Node]],
) -> None:
    """Build directory `plan` at dst_dir/name: `sources` holds an fd of it in every layer it merges, `above`
    one of the directory holding it in the layer that shows it (None for the root)."""
    node = plan.node
    os.mkdir(name, 0o700, dir_fd=dst_dir)
    fd = os.open(name, DIR_FLAGS, dir_fd=dst_dir)
    try:
        for child in plan.children:
            if isinstance(child, TreePlan):
                with contextlib.ExitStack() as fds:
                    below: dict[int, int] = {}
                    for index in child.node.layers:
                        below[index] = os.open(child.node.name, DIR_FLAGS, dir_fd=sources[index])
                        fds.callback(os.close, below[index])
                    _build_dir(upper, child, fd, child.node.name, below, sources[child.node.layer], aliases)
            elif child.layer == 0:
                if child.meta_only:
                    raise OSError(errno.EAGAIN, "a metadata-only file must be copied up before its directory")
                os.link(child.name, child.name, src_dir_fd=sources[0], dst_dir_fd=fd, follow_symlinks=False)
            else:
                source = OpenDir(sources[child.layer], upper.tree.layers[child.layer].fetcher)
                upper.copy_nondir(child, fd, child.name, "full", src=source)
                aliases.append((os.stat(child.name, dir_fd=fd, follow_symlinks=False), child))
    finally:
        os.close(fd)
    upper.set_meta(dst_dir, name, node.st, OpenDir(above).xattrs((node.name,)) if above is not None else None)
    aliases.append((os.stat(name, dir_fd=dst_dir, follow_symlinks=False), node))


def adopt(upper: Upper, built: BuiltTree) -> None:
    """Tell Upper.alias where the entries of a built tree now live (on the request loop)."""
    for st, node in built.aliases:
        upper.alias(st, node)
