"""Cache invalidation, explicit: the generation the core moves on every change to the upper, and the daemon's
caches of resolved entries and merged listings that hold only while it stands still. No FUSE here.

A core operation that may change the upper is marked `@changes`: the generation moves when it returns or fails
(whatever it got done is then visible), so no caller, renamed handler or new request path can forget it. Writes
of file data never reach the core (libfuse writes them to the handle's fd): `NodeCache.written` says what they
made stale.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, Generic, ParamSpec, Protocol, TypeVar

from .tree import Node

P = ParamSpec("P")
R = TypeVar("R")
E = TypeVar("E")

NODE_CACHE = 65536
LISTING_CACHE = 1024


class Generational(Protocol):
    generation: int


G = TypeVar("G", bound=Generational)


def changes(method: Callable[Concatenate[G, P], R]) -> Callable[Concatenate[G, P], R]:
    """Mark a method that may change the upper: cached resolutions and listings are stale once it has run,
    whether it returned or raised."""

    @functools.wraps(method)
    def wrapper(self: G, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        finally:
            self.generation += 1

    wrapper.changes = True  # type: ignore[attr-defined]  # (tests check that every writer is marked)
    return wrapper


def marked_changes(method: object) -> bool:
    """Whether `method` is marked @changes."""
    return getattr(method, "changes", False) is True


class NodeCache(Generic[E]):
    """Resolved entries by inode number, and merged listings (of entries `E`) by directory, valid for one
    generation of `source`. Bounded: each is cleared whole when full."""

    def __init__(self, source: Generational, nodes: int = NODE_CACHE, listings: int = LISTING_CACHE) -> None:
        self.source = source
        self.max_nodes = nodes
        self.max_listings = listings
        self._generation = source.generation
        self._nodes: dict[int, Node] = {}
        self._written: set[int] = set()  # cached nodes whose data was written since: their size and times are stale
        self._listings: dict[int, E] = {}

    def _current(self) -> None:
        if self._generation != self.source.generation:
            self.clear()
            self._generation = self.source.generation

    def clear(self) -> None:
        self._nodes.clear()
        self._written.clear()
        self._listings.clear()

    def node(self, nodeid: int, resolve: Callable[[int], Node], attrs: bool = True) -> Node:
        """The entry `nodeid`, resolved (by `resolve(nodeid)`) again only after the upper changed. Writing a
        file's data leaves its place in the tree as it was: with attrs=False, a node cached before the writes
        will do (its size and times may be stale), for requests that need only where the entry is."""
        if self._generation != self.source.generation:
            self._current()
        node = self._nodes.get(nodeid)
        if node is None or (attrs and nodeid in self._written):
            node = resolve(nodeid)
            if len(self._nodes) >= self.max_nodes:
                self._nodes.clear()
                self._written.clear()
            self._nodes[nodeid] = node
            self._written.discard(nodeid)
        return node

    def listing(self, nodeid: int, build: Callable[[], E]) -> E:
        """Directory `nodeid`'s merged listing, built once per generation."""
        self._current()
        listing = self._listings.get(nodeid)
        if listing is None:
            listing = build()
            if len(self._listings) >= self.max_listings:
                self._listings.clear()
            self._listings[nodeid] = listing
        return listing

    def written(self, nodeid: int) -> None:
        """File `nodeid`'s data is being written: its size and times are stale, where cached, in its node and in
        every listing."""
        self._written.add(nodeid)
        self._listings.clear()
