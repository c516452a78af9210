"""Presenting stored owner ids differently, as fuse-overlayfs's uidmapping/gidmapping and squash options do.

`uidmapping=C:H:L` says stored (image) ids C..C+L-1 are shown as H..H+L-1 and requests from H.. are stored
as C..; several triples may follow each other. A stored id no triple covers shows as the overflow id 65534.
`squash_to_root`, `squash_to_uid=N` and `squash_to_gid=N` show every entry with that owner instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import UnionfsError

OVERFLOW_ID = 65534


class IdMapError(UnionfsError, ValueError):
    """A malformed mapping option."""


@dataclass(frozen=True)
class Mapping:
    triples: tuple[tuple[int, int, int], ...] = ()  # (stored start, shown start, length)

    @classmethod
    def parse(cls, text: str) -> Mapping:
        try:
            numbers = [int(part) for part in text.replace(",", ":").split(":") if part != ""]
        except ValueError:
            raise IdMapError(f"'{text}' is not a list of numbers CONTAINER:HOST:LENGTH[:...]") from None
        if not numbers or len(numbers) % 3:
            raise IdMapError(f"'{text}' must be triples CONTAINER:HOST:LENGTH with positive lengths")
        triples = tuple((numbers[i], numbers[i + 1], numbers[i + 2]) for i in range(0, len(numbers), 3))
        if any(length <= 0 for _, _, length in triples):
            raise IdMapError(f"'{text}' has a range of length 0")
        return cls(triples)

    def show(self, stored: int) -> int:
        if not self.triples:
            return stored
        for start, shown, length in self.triples:
            if start <= stored < start + length:
                return shown + stored - start
        return OVERFLOW_ID

    def store(self, shown_id: int) -> int:
        for start, shown, length in self.triples:
            if shown <= shown_id < shown + length:
                return start + shown_id - shown
        return shown_id


@dataclass(frozen=True)
class IdMap:
    uids: Mapping = field(default_factory=Mapping)
    gids: Mapping = field(default_factory=Mapping)
    squash_uid: int | None = None
    squash_gid: int | None = None

    def show_uid(self, stored: int) -> int:
        return self.squash_uid if self.squash_uid is not None else self.uids.show(stored)

    def show_gid(self, stored: int) -> int:
        return self.squash_gid if self.squash_gid is not None else self.gids.show(stored)

    def store_uid(self, shown: int) -> int:
        return self.uids.store(shown)

    def store_gid(self, shown: int) -> int:
        return self.gids.store(shown)

    @property
    def identity(self) -> bool:
        return not self.uids.triples and not self.gids.triples and self.squash_uid is None and self.squash_gid is None
