"""The handle table: what each open file and directory handle the kernel holds refers to. No FUSE here.

A handle reading a lower file follows that file into the upper when it is copied up (one view of each file): the
copy-up reports the file's number (`copied`), and `follow_copy_ups` reopens such handles on the upper copy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .tree import Node

L = TypeVar("L")


@dataclass(slots=True)
class FileHandle:
    nodeid: int
    fd: int
    lower: bool  # reading a lower layer's file: must follow the file when it is copied up
    drops_setgid: bool = False  # opened for writing by a caller whose first write clears the file's setgid bit


class Handles(Generic[L]):
    """Open files (an fd each) and open directories (their inode, node and listing `L`), by handle number."""

    def __init__(self) -> None:
        self.files: dict[int, FileHandle] = {}
        self.dirs: dict[int, tuple[int, Node, L]] = {}
        self._next = 1
        self.copied_up: set[int] = set()  # files copied up whose reading handles have yet to follow them

    def _number(self) -> int:
        self._next += 1
        return self._next

    def open_file(self, nodeid: int, fd: int, lower: bool) -> int:
        fh = self._number()
        self.files[fh] = FileHandle(nodeid, fd, lower)
        return fh

    def open_dir(self, nodeid: int, node: Node, listing: L) -> int:
        fh = self._number()
        self.dirs[fh] = (nodeid, node, listing)
        return fh

    def release(self, fh: int) -> None:
        os.close(self.files.pop(fh).fd)

    def fd_of(self, nodeid: int, *, upper: bool = False) -> int | None:
        """An fd some handle holds open on `nodeid` (`upper`: on its upper file), or None."""
        return next((h.fd for h in self.files.values() if h.nodeid == nodeid and not (upper and h.lower)), None)

    def copied(self, nodeid: int) -> None:
        """File `nodeid` was copied up: handles reading its lower file are to follow it (follow_copy_ups)."""
        self.copied_up.add(nodeid)

    def follow_copy_ups(self, reopen: Callable[[int], int | None]) -> None:
        """Point read-only fds of files just copied up at their upper copies: `reopen(nodeid)` opens one, or
        gives None (or fails) where there is none."""
        if not self.copied_up:
            return
        copied, self.copied_up = self.copied_up, set()
        for handle in self.files.values():
            if handle.lower and handle.nodeid in copied:
                try:
                    fd = reopen(handle.nodeid)
                except OSError:
                    continue
                if fd is not None:
                    os.close(handle.fd)
                    handle.fd, handle.lower = fd, False


def kernel_at_least(major: int, minor: int) -> bool:
    release = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return release is not None and (int(release[1]), int(release[2])) >= (major, minor)


#: Direct I/O for write-only handles: only where the kernel invalidates cached pages of the written range.
DIRECT_WRITES = kernel_at_least(6, 6)


def direct_write(flags: int) -> bool:
    """Whether a handle opened with `flags` writes straight to the daemon (direct I/O). Every change to a file's
    data passes through the kernel, which keeps its page cache up to date: the cache can outlive the open for
    upper files as well as lower ones (keep_cache).

    What a write-only handle writes goes straight to the daemon: a page-cache write would copy each page once
    more into the mount's cache, for a handle that can neither read nor map it. Linux 6.6 and later drop the
    range's cached pages before such a write, so other handles never read stale data; older kernels do not, and
    there every handle writes through the page cache. So does a handle on a file whose privileges a write must
    strip (UnionFS.strips_on_write, for the caller to ask only where this says yes: it costs a getxattr): the
    kernel strips them only on the page-cache path, and on the direct one leaves it to the daemon without
    libfuse saying when."""
    return DIRECT_WRITES and flags & os.O_ACCMODE == os.O_WRONLY
