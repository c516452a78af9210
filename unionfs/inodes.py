"""The inode table: numbers the kernel knows, their lookup counts, and the names they were found under.

Numbers are derived from where an entry lives, (layer, st_ino), so they are stable for the life of the mount
and identical in readdir and stat. An entry copied up keeps its number through an alias from its new upper
inode; hard links of one inode share one number. The table holds only entries the kernel still knows
(lookup count above zero) and the directories above them, so it is bounded by the kernel's cache.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from .errors import UnionError
from .layers import Path
from .tree import Node

ROOT_INODE = 1
LAYER_SHIFT = 56
MAX_DIRECT_INO = 1 << LAYER_SHIFT
SPILL_BASE = 1 << 63
MAX_OTHER_NAMES = 16


@dataclass(slots=True)
class Inode:
    nodeid: int
    parent: int
    name: str
    nlookup: int = 0
    children: int = 0
    unlinked: bool = False
    # other names of a hard-linked file the kernel was handed, so one going does not strand the number
    others: list[tuple[int, str]] = field(default_factory=list)


class InodeTable:
    def __init__(self) -> None:
        self._by_id: dict[int, Inode] = {ROOT_INODE: Inode(ROOT_INODE, ROOT_INODE, "", 1)}
        self._alias: dict[int, int] = {}  # upper st_ino -> number of the entry it was copied up from
        self._spill: dict[tuple[int, int], int] = {}  # numbers for inodes too large to encode
        self._next_spill = SPILL_BASE

    def __len__(self) -> int:
        return len(self._by_id)

    def _allocate(self) -> int:
        self._next_spill += 1
        return self._next_spill - 1

    def _spilled(self, key: tuple[int, int]) -> int:
        nodeid = self._spill.get(key)
        if nodeid is None:
            nodeid = self._spill[key] = self._allocate()
        return nodeid

    def nodeid(self, node: Node) -> int:
        if not node.path:
            return ROOT_INODE
        ino = node.st.st_ino
        if node.layer == 0:
            alias = self._alias.get(ino)
            if alias is not None:
                return alias
        if ino < MAX_DIRECT_INO and node.layer < 255:
            return ((node.layer + 1) << LAYER_SHIFT) | ino
        return self._spilled((node.layer, ino))

    def alias(self, upper_st: os.stat_result, nodeid: int) -> None:
        """The upper inode `upper_st` now shows the entry numbered `nodeid` (it was copied up)."""
        if upper_st.st_ino == nodeid & (MAX_DIRECT_INO - 1) and nodeid >> LAYER_SHIFT == 1:
            self._alias.pop(upper_st.st_ino, None)
        else:
            self._alias[upper_st.st_ino] = nodeid

    def fresh(self, upper_st: os.stat_result) -> None:
        """A new upper inode: forget what an earlier inode with the same number was, and never hand out a
        number the kernel still holds for a deleted file."""
        self._alias.pop(upper_st.st_ino, None)
        natural = (1 << LAYER_SHIFT) | upper_st.st_ino
        held = self._by_id.get(natural)
        if held is not None and held.unlinked:
            self._alias[upper_st.st_ino] = self._allocate()

    def remember(self, nodeid: int, parent: int, name: str) -> None:
        """The kernel was handed `nodeid` as `name` in `parent`: count one lookup."""
        entry = self._by_id.get(nodeid)
        if entry is None:
            entry = self._by_id[nodeid] = Inode(nodeid, parent, name)
            self._by_id[parent].children += 1
        elif entry.unlinked or (entry.parent, entry.name) != (parent, name):
            if not entry.unlinked:  # a second name of one file (a hard link): both stay valid
                self._add_other(entry, entry.parent, entry.name)
            self._forget_other(entry, parent, name)
            self._reparent(entry, parent, name)
        entry.nlookup += 1

    @staticmethod
    def _add_other(entry: Inode, parent: int, name: str) -> None:
        if (parent, name) not in entry.others and entry.nodeid != ROOT_INODE:
            entry.others.append((parent, name))
            del entry.others[:-MAX_OTHER_NAMES]

    @staticmethod
    def _forget_other(entry: Inode, parent: int, name: str) -> None:
        if (parent, name) in entry.others:
            entry.others.remove((parent, name))

    def _reparent(self, entry: Inode, parent: int, name: str) -> None:
        if entry.nodeid == ROOT_INODE:
            return
        if entry.parent != parent:
            self._by_id[parent].children += 1
            old = self._by_id.get(entry.parent)
            entry.parent = parent
            if old is not None:
                old.children -= 1
                self._drop_if_unused(old)
        entry.name = name
        entry.unlinked = False

    def moved(self, nodeid: int, parent: int, name: str, old: tuple[int, str]) -> None:
        """Name `old` (parent, name) of `nodeid` is now `name` in `parent`."""
        entry = self._by_id.get(nodeid)
        if entry is None:
            return
        if old != (entry.parent, entry.name) and old in entry.others:
            entry.others.remove(old)  # another name of a hard-linked file moved: the primary one stays
            self._add_other(entry, parent, name)
            return
        self._forget_other(entry, parent, name)
        self._reparent(entry, parent, name)

    def renamed(
        self, src_id: int, old: tuple[int, str], dst: Node | None, dst_id: int, new: tuple[int, str], exchange: bool
    ) -> None:
        """Entry `src_id` moved from `old` (parent, name) to `new`, replacing `dst` (numbered `dst_id`) there, or
        swapping names with it (`exchange`)."""
        if exchange:
            if dst_id != src_id:  # (dst exists: the exchange needed it)
                self.moved(dst_id, *old, new)
            self.moved(src_id, *new, old)
            return
        if dst is not None and dst_id != src_id:
            if dst.is_dir or dst.st.st_nlink <= 1:
                self.unlinked(dst_id)
            else:
                self.name_gone(dst_id, *new)
        self.moved(src_id, *new, old)

    def name_gone(self, nodeid: int, parent: int, name: str) -> None:
        """One name of a file with other names was removed: keep the number reachable by another."""
        entry = self._by_id.get(nodeid)
        if entry is None:
            return
        self._forget_other(entry, parent, name)
        while (entry.parent, entry.name) == (parent, name) and entry.others:
            other_parent, other_name = entry.others.pop()
            if other_parent in self._by_id:  # the directory of that name is still known
                self._reparent(entry, other_parent, other_name)

    def unlinked(self, nodeid: int) -> None:
        entry = self._by_id.get(nodeid)
        if entry is not None and nodeid != ROOT_INODE:
            entry.unlinked = True

    def forget(self, nodeid: int, count: int) -> None:
        entry = self._by_id.get(nodeid)
        if entry is None or nodeid == ROOT_INODE:
            return
        entry.nlookup -= count
        self._drop_if_unused(entry)

    def _drop_if_unused(self, entry: Inode) -> None:
        while entry.nodeid != ROOT_INODE and entry.nlookup <= 0 and entry.children <= 0:
            del self._by_id[entry.nodeid]
            parent = self._by_id.get(entry.parent)
            if parent is None:
                return
            parent.children -= 1
            entry = parent

    def path(self, nodeid: int) -> Path:
        """The merged-view path the kernel knows `nodeid` by; ENOENT when it was removed (or is unknown)."""
        names: list[str] = []
        while nodeid != ROOT_INODE:
            entry = self._by_id.get(nodeid)
            if entry is None or entry.unlinked:
                raise UnionError(errno.ENOENT)
            names.append(entry.name)
            nodeid = entry.parent
        return tuple(reversed(names))
