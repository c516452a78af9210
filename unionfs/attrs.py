"""What a request asks of an entry's attributes: a setattr's changes, the owner of a new entry. Pure."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AttrChange:
    """What a setattr asks to change; None: leave as it is."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None

    @property
    def sets_times(self) -> bool:
        return self.atime_ns is not None or self.mtime_ns is not None

    def times_ns(self, st: os.stat_result | None) -> tuple[int, int]:
        """The (atime, mtime) to set: the one not asked for kept from `st` (which may be None when both are)."""
        atime = self.atime_ns if self.atime_ns is not None else None if st is None else st.st_atime_ns
        mtime = self.mtime_ns if self.mtime_ns is not None else None if st is None else st.st_mtime_ns
        if atime is None or mtime is None:
            raise ValueError("a time kept needs the entry's stat")
        return atime, mtime


@dataclass(frozen=True, slots=True)
class Owner:
    """Who asks for a new entry: its owner unless the parent directory says otherwise (setgid)."""

    uid: int
    gid: int
    umask: int = 0  # what the kernel leaves to the filesystem to apply, where no default ACL replaces it
