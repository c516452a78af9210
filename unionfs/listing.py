"""Directory offsets that stay put: a merged listing in the order of a hash of each name. No FUSE here.

The kernel reads a directory in parts, handing back the offset of the last entry it got. An offset that is an
entry's position shifts when an earlier entry goes, and the reader then misses one (`rm -rf` of a directory
read in batches). An offset derived from the name alone (as ext4 does) does not move.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Offsets 1 and 2 belong to "." and ".."; 0 means "from the start".
FIRST_COOKIE = 3


def name_cookie(name: str) -> int:
    """The offset of `name`: 62 bits of its hash, at or above FIRST_COOKIE."""
    digest = hashlib.blake2b(os.fsencode(name), digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 2) + FIRST_COOKIE


class Listing(Generic[T]):
    """A directory's entries in offset order, with their offsets."""

    __slots__ = ("cookies", "entries")

    def __init__(self, entries: list[T], name_of: Callable[[T], str]) -> None:
        names = [name_of(entry) for entry in entries]
        keyed = sorted((name_cookie(name), name, index) for index, name in enumerate(names))
        self.entries: list[T] = []
        self.cookies: list[int] = []
        for cookie, _, index in keyed:  # equal hashes (never seen in practice) still get distinct offsets
            self.cookies.append(max(cookie, self.cookies[-1] + 1) if self.cookies else cookie)
            self.entries.append(entries[index])

    def after(self, offset: int) -> int:
        """The index of the first entry a reader that got up to `offset` has not had yet."""
        return bisect.bisect_right(self.cookies, offset)
