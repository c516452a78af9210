"""Which parts of the merged tree requests may change while another request waits for a worker thread.

Requests run one at a time on the request loop, so a request that never yields sees no other half done. A request
that hands slow work to a thread (a large copy-up, the copy of a directory tree for a rename) yields the loop
meanwhile, and the paths it works on must not change under it:

- every request that changes the tree first waits until no exclusive lease covers the paths it changes; one
  that may yield on the way holds a *shared* lease on them for as long as it runs (shared leases never wait for
  each other);
- a directory rename holds an *exclusive* lease on both of its names: no request changes anything at, above or
  below them until it is done, while requests elsewhere, and every read, go on. It waits for the shared leases
  under way there, so no request is left working on a path the rename moved.

Two paths conflict when one is a prefix of the other (the same entry, or one lies inside the other). An
exclusive lease is announced before it waits for conflicting shared leases to end, so new ones queue behind it.
With no exclusive lease announced, taking and leaving a shared one costs two dict operations.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from types import TracebackType

import trio

Path = tuple[str, ...]


def conflict(a: Path, b: Path) -> bool:
    """Whether a change at `a` and a change at `b` touch the same part of the tree."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _any_conflict(held: Iterable[tuple[Path, ...]], paths: tuple[Path, ...]) -> bool:
    return any(conflict(h, p) for lease in held for h in lease for p in paths)


class PathLocks:
    def __init__(self) -> None:
        self._tokens = itertools.count()
        self._shared: dict[int, tuple[Path, ...]] = {}
        self._exclusive: dict[int, tuple[Path, ...]] = {}
        self._changed = trio.Event()

    @property
    def contended(self) -> bool:
        """Whether an exclusive lease is announced: only then may a request have to wait."""
        return bool(self._exclusive)

    def _released(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_while(self, held: dict[int, tuple[Path, ...]], paths: tuple[Path, ...]) -> None:
        while _any_conflict(held.values(), paths):
            await self._changed.wait()

    async def settle(self, *paths: Path) -> None:
        """Wait until no exclusive lease covers `paths`: enough for a request that then changes them without
        yielding the loop again."""
        if self._exclusive:
            await self._wait_while(self._exclusive, paths)

    def shared(self, *paths: Path) -> SharedLease:
        """Change `paths` (and what lies inside them), yielding the loop meanwhile, once no exclusive lease
        covers them: `async with locks.shared(...)`."""
        return SharedLease(self, paths)

    @asynccontextmanager
    async def exclusive(self, *paths: Path) -> AsyncIterator[None]:
        """Hold `paths`, everything inside them and every directory above them against any other change."""
        await self.settle(*paths)
        token = next(self._tokens)
        self._exclusive[token] = paths
        try:
            await self._wait_while(self._shared, paths)
            yield
        finally:
            del self._exclusive[token]
            self._released()

    def idle(self) -> bool:
        return not self._shared and not self._exclusive


class SharedLease:
    __slots__ = ("locks", "paths", "token")

    def __init__(self, locks: PathLocks, paths: tuple[Path, ...]) -> None:
        self.locks = locks
        self.paths = paths
        self.token = -1

    async def __aenter__(self) -> None:
        locks = self.locks
        await locks.settle(*self.paths)
        self.token = next(locks._tokens)
        locks._shared[self.token] = self.paths

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        locks = self.locks
        del locks._shared[self.token]
        if locks._exclusive:  # only an exclusive lease waits for shared ones to end
            locks._released()


__all__ = ["PathLocks", "SharedLease", "conflict"]
