"""Copy-ups that take a while, done off the request loop: a large file's data and the trees a directory rename
copies are copied by worker threads (trio.to_thread) while other requests are served. The caller holds a
path lease (pathlocks.py) on what it changes. No FUSE here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import trio

from .layers import Path
from .rename import Trees
from .tree import Node
from .treecopy import TreePlanner
from .union import UnionFS
from .upper import Content


class CopyAside:
    def __init__(self, fs: UnionFS) -> None:
        self.fs = fs
        self._copying: dict[tuple[int, int], trio.Event] = {}  # files (layer, inode) being copied up

    async def file(self, node: Node, locate: Callable[[], Node], content: Content = "full") -> bool:
        """Copy a large file `node` up, for `content`, with its data copied by a worker thread (a lower file's
        into a new upper file, a metadata-only file's in place), so that other requests are served meanwhile;
        a request for the same file waits for that copy-up instead of copying again. Small files and
        everything else are left to the synchronous path. Returns whether it awaited: other requests may then
        have changed the tree, and the caller must resolve again (`locate` finds the file anew). A file a lazy layer
        has yet to fetch is fetched by a worker thread first, whatever its size."""
        awaited = False
        pending = self.fs.copy_fetches(node, content)
        if pending is not None:  # a lazy file: fetched aside first, so the copy below reads the fetcher's cache
            os.close(await trio.to_thread.run_sync(pending.fetch))
            node, awaited = locate(), True
        while (busy := self._copying.get(key := (node.layer, node.st.st_ino))) is not None:
            await busy.wait()
            node, awaited = locate(), True
        staged = self.fs.stage_copy_up(node, content)
        if staged is None:
            return awaited
        done = self._copying[key] = trio.Event()
        try:
            await trio.to_thread.run_sync(staged.run)
            self.fs.copy_up_staged(locate(), staged)
        finally:
            self.fs.unstage(staged)
            del self._copying[key]
            done.set()
        return True

    async def trees(self, old_parent: Node, old: str, new_parent: Node, new: str, flags: int) -> Trees:
        """Copies of the directory trees a rename moves, built by a worker thread under the work dir. Files
        that must be copied up first (see TreePlanner) are, large ones aside too."""
        built: Trees = {}
        try:
            for tree in self.fs.trees_to_copy(old_parent, old, new_parent, new, flags):
                planner = await self._planned(tree)
                while planner.first:
                    for child in planner.first:
                        await self._copy_up_path(child.path)
                    planner = await self._planned(self.fs.resolve(tree.path))
                built[tree.path] = await trio.to_thread.run_sync(self.fs.build_tree, planner.plan)
        except BaseException:
            for made in built.values():
                self.fs.discard_tree(made)
            raise
        return built

    async def _planned(self, tree: Node) -> TreePlanner:
        """The plan of a tree's copy, listed a directory at a time with other requests served in between."""
        planner = self.fs.tree_planner(tree)
        while planner.step():
            await trio.lowlevel.checkpoint()
        return planner

    async def _copy_up_path(self, path: Path) -> None:
        """Copy up the file at `path` whole: a large one's data aside, as `file` does."""

        def locate() -> Node:
            return self.fs.resolve(path)

        await self.file(locate(), locate)
        self.fs.copy_up(locate())  # whatever is left: a small file, a link, a device; or nothing
