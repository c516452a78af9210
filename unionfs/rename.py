"""Rename, exchange and move without replacing, over the union: files and directories, across layers, with no
EXDEV. A merged or lower directory is copied whole into the work dir first (treecopy.py), so the move itself is
one rename. No FUSE here; UnionFS (union.py) carries these methods.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .caches import changes
from .errors import UnionError
from .layers import Path
from .names import check_name
from .syscalls import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2
from .tree import Node, Tree
from .treecopy import BuiltTree, TreePlan, TreePlanner, adopt, build_tree, copy_tree
from .upper import Content, Upper

#: copies of merged directories built ahead of a rename, by the path of the directory copied
Trees = dict[Path, BuiltTree]


class Renames:
    """The rename half of UnionFS."""

    tree: Tree
    upper: Upper | None
    generation: int

    if TYPE_CHECKING:

        def _writer(self) -> Upper: ...
        def _copy_up(self, node: Node, content: Content = "full") -> Node: ...
        def lookup(self, parent: Node, name: str) -> Node: ...
        def resolve(self, path: Path) -> Node: ...

    @changes
    def rename(
        self, old_parent: Node, old: str, new_parent: Node, new: str, flags: int, built: Trees | None = None
    ) -> None:
        """Rename, exchange (RENAME_EXCHANGE) or move without replacing (RENAME_NOREPLACE). `built`: copies of
        the trees trees_to_copy named, made beforehand (build_tree); whatever of them goes unused is removed."""
        built = dict(built or {})
        try:
            self._rename(old_parent, old, new_parent, new, flags, built)
        finally:
            self.tree.reshaped()
            for made in built.values():
                self.discard_tree(made)

    def trees_to_copy(self, old_parent: Node, old: str, new_parent: Node, new: str, flags: int) -> list[Node]:
        """The merged or lower directories this rename would copy whole, to copy beforehand: none when it
        would fail, or moves only upper directories and files."""
        try:
            src = self.lookup(old_parent, old)
            if flags & RENAME_EXCHANGE:
                nodes = [src, self.lookup(new_parent, new)]
            else:
                self._check_move(src, new_parent, new, flags)
                nodes = [src]
        except OSError:
            return []
        return [node for node in nodes if node.is_dir and node.layers != (0,)]

    def tree_planner(self, node: Node) -> TreePlanner:
        """What copying merged directory `node` takes, planned step by step (see TreePlanner)."""
        if self.upper is None:
            raise UnionError(errno.EROFS)
        return TreePlanner(self.tree, node)

    def build_tree(self, plan: TreePlan) -> BuiltTree:
        """Copy a planned tree under the work dir, in a worker thread if need be (see Upper.build_tree)."""
        assert self.upper is not None  # (a planner needs one)
        return build_tree(self.upper, plan)

    def discard_tree(self, built: BuiltTree) -> None:
        assert self.upper is not None
        self.upper.discard(built.tmp)

    def _check_move(self, src: Node, new_parent: Node, new: str, flags: int) -> Node | None:
        """The errors a plain rename of `src` to new_parent/new gives; returns what it would replace."""
        check_name(new)
        if not new_parent.is_dir:
            raise UnionError(errno.ENOTDIR)
        dst = self.tree.lookup(new_parent, new)
        if dst is not None:
            if flags & RENAME_NOREPLACE:
                raise UnionError(errno.EEXIST)
            if src.is_dir and not dst.is_dir:
                raise UnionError(errno.ENOTDIR)
            if not src.is_dir and dst.is_dir:
                raise UnionError(errno.EISDIR)
            if dst.is_dir and not self.tree.is_empty(dst):
                raise UnionError(errno.ENOTEMPTY)
        return dst

    def _rename(self, old_parent: Node, old: str, new_parent: Node, new: str, flags: int, built: Trees) -> None:
        upper = self._writer()
        if flags & RENAME_EXCHANGE:
            self._exchange(old_parent, old, new_parent, new, built)
            return
        src = self.lookup(old_parent, old)
        dst = self._check_move(src, new_parent, new, flags)
        if (
            dst is not None
            and not src.is_dir
            and (src.layer, src.st.st_ino, src.st.st_dev) == (dst.layer, dst.st.st_ino, dst.st.st_dev)
        ):
            return  # two names of one file: POSIX says do nothing
        src_whiteout = self.tree.lower_has(old_parent, old)
        if src.is_dir:
            self._rename_dir(src, old_parent, new_parent, new, src_whiteout, built)
            return
        src = self._copy_up(src)
        new_fd = upper.ensure_dir(new_parent)
        old_fd = upper.ensure_dir(self.resolve(old_parent.path))
        upper.move(old_fd, old, new_fd, new, False, src_whiteout)

    def _exchange(self, old_parent: Node, old: str, new_parent: Node, new: str, built: Trees) -> None:
        """Swap two names atomically (renameat2 RENAME_EXCHANGE): both entries are first made whole upper
        entries that show the same content at either name, then the upper swaps them in one step."""
        upper = self._writer()
        src = self.lookup(old_parent, old)
        self.lookup(new_parent, new)
        if (old_parent.path, old) == (new_parent.path, new):
            return
        self._standalone(old_parent, src, self.tree.lower_has(new_parent, new), built)
        dst = self.resolve((*new_parent.path, new))  # the first step may have copied it up (a hard link)
        self._standalone(self.resolve(new_parent.path), dst, self.tree.lower_has(old_parent, old), built)
        old_fd = upper.ensure_dir(self.resolve(old_parent.path))
        new_fd = upper.ensure_dir(self.resolve(new_parent.path))
        renameat2(old_fd, old, new_fd, new, RENAME_EXCHANGE)
        upper.layer.flush()

    def _standalone(self, parent: Node, node: Node, opaque: bool, built: Trees) -> None:
        """Make `node` an upper entry whose view does not depend on the layers below its name, so it can move
        to another name; `opaque` when the layers below that other name have a directory to hide."""
        upper = self._writer()
        if not node.is_dir:
            self._copy_up(node)
            return
        parent_fd = upper.ensure_dir(self.resolve(parent.path))
        if node.layers == (0,):
            if opaque:
                upper.make_opaque(parent_fd, node.name)
            return
        tmp = self._tree_copy(node, built)  # as for a rename: the merged content, whole, then opaque
        try:
            upper.make_opaque(upper.work_fd, tmp)
            upper.place_new(tmp, parent_fd, node.name, True)
        except BaseException:
            upper.discard(tmp)
            raise

    def _tree_copy(self, node: Node, built: Trees) -> str:
        """The work-dir name of a whole copy of merged directory `node`: one built beforehand, or made now."""
        upper = self._writer()
        made = built.pop(node.path, None)
        if made is None:
            return copy_tree(upper, node)
        adopt(upper, made)
        return made.tmp

    def _rename_dir(
        self, src: Node, old_parent: Node, new_parent: Node, new: str, src_whiteout: bool, built: Trees
    ) -> None:
        """Move a directory, merged or not, with no EXDEV: a merged or lower directory is first copied whole
        into the work dir (upper files by hard link), so the move itself is one rename."""
        upper = self._writer()
        new_fd = upper.ensure_dir(new_parent)
        old_fd = upper.ensure_dir(self.resolve(old_parent.path))
        opaque = self.tree.lower_has(new_parent, new)
        if src.layers == (0,):  # wholly in the upper: one move
            if opaque:
                upper.make_opaque(old_fd, src.name)
            upper.move(old_fd, src.name, new_fd, new, True, src_whiteout)
            return
        # A merged or lower directory: its whole merged content, copied into the work dir (upper files by hard
        # link), first takes the old name (the same content: still the old state), then moves in one step.
        tmp = self._tree_copy(src, built)
        try:
            upper.make_opaque(upper.work_fd, tmp)  # at the old name it stands over the lower directory
            upper.place_new(tmp, old_fd, src.name, True)
        except BaseException:
            upper.discard(tmp)
            raise
        upper.move(old_fd, src.name, new_fd, new, True, src_whiteout)
