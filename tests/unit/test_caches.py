"""The daemon's caches and what invalidates them (unionfs/caches.py), without a mount."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import pytest

from unionfs.caches import NodeCache, changes, marked_changes
from unionfs.tree import Node
from unionfs.union import UnionFS

#: UnionFS methods that change nothing a cached node or listing shows (the rest must be marked @changes)
READERS = {
    "end_request",
    "resolve",
    "directory",
    "lookup",
    "location",
    "readlink",
    "reopen_from_upper",
    "placeholder",
    "copy_fetches",
    "getxattr",
    "strips_on_write",
    "listxattr",
    "statvfs",
    "children",
    "stage_copy_up",  # opens fds and a work-dir file; copy_up_staged puts it in place
    "unstage",
    "check_xattr_change",
    "trees_to_copy",
    "tree_planner",
    "build_tree",  # the work dir only; the rename that uses it is marked
    "discard_tree",
    "open",  # reading changes nothing; writing opens copy up or truncate through marked methods
}


@dataclass
class Source:
    generation: int = 0


def node(name: str, size: int = 0) -> Node:
    st = os.stat_result((0o100644, 1, 0, 1, 0, 0, size, 0, 0, 0))
    return Node((name,), 1, st, (1,))


def test_a_node_is_resolved_once_per_generation() -> None:
    source = Source()
    cache: NodeCache[list[str]] = NodeCache(source)
    calls: list[str] = []

    def resolve(_nodeid: int) -> Node:
        calls.append("a")
        return node("a", len(calls))

    assert cache.node(5, resolve).st.st_size == 1
    assert cache.node(5, resolve).st.st_size == 1
    source.generation += 1
    assert cache.node(5, resolve).st.st_size == 2
    assert len(calls) == 2


def test_written_data_makes_attributes_stale_but_not_the_place() -> None:
    source = Source()
    cache: NodeCache[list[str]] = NodeCache(source)
    sizes = iter(range(1, 10))

    def resolve(_nodeid: int) -> Node:
        return node("a", next(sizes))

    cache.node(5, resolve)
    cache.written(5)
    assert cache.node(5, resolve, attrs=False).st.st_size == 1  # where it is: unchanged by a write
    assert cache.node(5, resolve).st.st_size == 2  # its attributes: resolved again
    assert cache.node(5, resolve).st.st_size == 2


def test_listings_go_with_the_generation_and_with_any_write() -> None:
    source = Source()
    cache: NodeCache[list[str]] = NodeCache(source)
    built: list[int] = []

    def build() -> list[str]:
        built.append(1)
        return ["x"]

    cache.listing(1, build)
    cache.listing(1, build)
    assert len(built) == 1
    cache.written(7)  # a file in it may be one of its entries: their sizes are stale
    cache.listing(1, build)
    assert len(built) == 2
    source.generation += 1
    cache.listing(1, build)
    assert len(built) == 3


def test_caches_are_bounded() -> None:
    cache: NodeCache[list[str]] = NodeCache(Source(), nodes=3, listings=2)
    for nodeid in range(10):
        cache.node(nodeid, lambda _nodeid: node("a"))
        cache.listing(nodeid, list)
    assert len(cache._nodes) <= 3 and len(cache._listings) <= 2


def test_changes_moves_the_generation_even_when_the_change_fails() -> None:
    class Core:
        generation = 0

        @changes
        def good(self) -> int:
            return 1

        @changes
        def bad(self) -> None:
            raise OSError(5, "half done")

    core = Core()
    assert core.good() == 1 and core.generation == 1
    with pytest.raises(OSError):
        core.bad()
    assert core.generation == 2


def test_every_core_operation_that_may_write_is_marked() -> None:
    """A new public method of UnionFS must say whether it changes the upper: marked @changes, or listed here as
    a reader. A writer that is neither would serve stale attributes with no error."""
    public = {name for name, member in inspect.getmembers(UnionFS, inspect.isfunction) if not name.startswith("_")}
    unmarked = {name for name in public if not marked_changes(getattr(UnionFS, name))}
    assert unmarked == READERS, "unmarked methods that are not known readers: mark them @changes"
