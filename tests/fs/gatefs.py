"""A read-only FUSE filesystem with one file, `big`, whose reads wait until the test opens a gate.

Used as a lower layer, it holds a copy-up of `big` in the middle of copying data for as long as a test needs,
so the test can see what other requests do meanwhile. Run as `python -m tests.fs.gatefs MOUNTPOINT SIZE STATE
[DIR]`: reads of `big` wait until STATE/open exists; STATE/reading appears when the first read waits; STATE/served
holds the number of bytes read so far. With DIR, `big` lies in a directory of that name.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pyfuse3
import trio

NAME = b"big"
DIR_INODE = pyfuse3.ROOT_INODE + 1
FILE_INODE = pyfuse3.ROOT_INODE + 2


def content(size: int) -> bytes:
    """What `big` holds: not all zeros, so a copy that loses or repeats a block shows."""
    block = bytes(range(251)) * 4096
    return (block * (size // len(block) + 1))[:size]


class GateFS(pyfuse3.Operations):
    def __init__(self, size: int, state: Path, directory: bytes | None = None) -> None:
        super().__init__()
        self.directory = directory
        self.home = DIR_INODE if directory is not None else pyfuse3.ROOT_INODE  # where `big` lies
        self.state = state
        self.data = content(size)
        self.served = 0

    def _attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        if inode in (pyfuse3.ROOT_INODE, DIR_INODE):
            attr.st_mode = stat.S_IFDIR | 0o755
            attr.st_nlink = 2
        else:
            attr.st_mode = stat.S_IFREG | 0o644
            attr.st_nlink = 1
            attr.st_size = len(self.data)
        attr.st_blksize = 4096
        attr.st_blocks = (attr.st_size + 511) // 512
        attr.entry_timeout = attr.attr_timeout = 300
        return attr

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if parent_inode == pyfuse3.ROOT_INODE and self.directory is not None and name == self.directory:
            return self._attrs(DIR_INODE)
        if parent_inode != self.home or name != NAME:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(FILE_INODE)

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attrs(inode)

    async def opendir(self, inode: int, ctx: Any) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        if start_id == 0:
            if fh == self.home:
                pyfuse3.readdir_reply(token, NAME, self._attrs(FILE_INODE), 1)
            elif self.directory is not None:
                pyfuse3.readdir_reply(token, self.directory, self._attrs(DIR_INODE), 1)

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EROFS)
        return pyfuse3.FileInfo(fh=inode)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        gate = self.state / "open"
        if not gate.exists():
            (self.state / "reading").touch()
            while not gate.exists():
                await trio.sleep(0.01)
        chunk = self.data[off : off + size]
        self.served += len(chunk)
        (self.state / "served").write_text(str(self.served))
        return chunk

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        raise pyfuse3.FUSEError(errno.ENODATA)

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return []


def main() -> None:
    mountpoint, size, state = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    directory = os.fsencode(sys.argv[4]) if len(sys.argv) > 4 else None
    pyfuse3.init(GateFS(size, state, directory), mountpoint, {"fsname=gatefs", "ro"})
    (state / "mounted").touch()
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
