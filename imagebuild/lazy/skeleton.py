"""A lazy layer's skeleton: the layer directory extraction would make, made from the eStargz TOC alone.

Directories, symlinks, devices, fifos, hard links, whiteouts and opaque markers are made exactly as extraction
makes them (owners, modes, mtimes, xattrs; ownership records when rootless), by the same extractor. Each
non-empty regular file is a sparse placeholder of its size carrying `user.unionfs.fetch` = `LAYER\\0NAME` (the
layer's blob digest, the file's name in the TOC), which unionfs hands to the fetcher on first open. The TOC's
own `stargz.index.json`, which every extracting client shows in the root, is written whole: its bytes are the
TOC we hold.
"""

from __future__ import annotations

import base64
import io
import os
import tarfile
from datetime import datetime
from typing import IO, Any

from imagebuild.layer import estargz as esgz
from imagebuild.layer.errors import LayerError
from imagebuild.layer.extract import MemberData, WhiteoutForm, _Extractor, extract_members
from unionfs import FETCH_XATTR

_TYPES = {
    "dir": tarfile.DIRTYPE,
    "reg": tarfile.REGTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def _mtime(text: object) -> float:
    if not isinstance(text, str) or not text:
        return 0
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise LayerError(f"modtime {text!r} is not a time") from None


def member(entry: dict[str, Any]) -> tarfile.TarInfo:
    """The tar header a TOC entry stands for."""
    kind = _TYPES.get(str(entry.get("type")))
    if kind is None:
        raise LayerError(f"{entry.get('name')!r}: TOC entry type {entry.get('type')!r} is not one we know")
    info = tarfile.TarInfo(str(entry["name"]).rstrip("/") or ".")
    info.type = kind
    info.size = int(entry.get("size", 0)) if kind == tarfile.REGTYPE else 0
    info.mode = int(entry.get("mode", 0))
    info.uid, info.gid = int(entry.get("uid", 0)), int(entry.get("gid", 0))
    info.uname, info.gname = str(entry.get("userName", "")), str(entry.get("groupName", ""))
    info.mtime = _mtime(entry.get("modtime"))
    info.linkname = str(entry.get("linkName", ""))
    info.devmajor, info.devminor = int(entry.get("devMajor", 0)), int(entry.get("devMinor", 0))
    info.pax_headers = {
        "SCHILY.xattr." + key: base64.b64decode(value).decode("utf-8", "surrogateescape")
        for key, value in dict(entry.get("xattrs") or {}).items()
    }
    return info


def members(toc: esgz.Toc) -> list[tarfile.TarInfo]:
    """Every entry of the layer, in tar order, the TOC's own file last as in the blob."""
    found = [member(e) for e in toc.entries if e.get("type") != "chunk" and e.get("name") != esgz.TOC_NAME]
    index = tarfile.TarInfo(esgz.TOC_NAME)
    index.size, index.mode, index.mtime = len(toc.raw), 0o644, 0
    return [*found, index]


class _TocData:
    """The data the skeleton has: the TOC itself, and that of empty files."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def extractfile(self, member: tarfile.TarInfo) -> IO[bytes] | None:
        if member.name == esgz.TOC_NAME:
            return io.BytesIO(self.raw)
        return io.BytesIO(b"") if not member.size else None


class _Skeleton(_Extractor):
    def __init__(self, root_fd: int, form: WhiteoutForm, rootless: bool, layer: str) -> None:
        super().__init__(root_fd, form, rootless)
        self._layer = layer.encode()

    def _fill(self, tar: MemberData, member: tarfile.TarInfo, fd: int) -> None:
        if member.name == esgz.TOC_NAME or not member.size:
            super()._fill(tar, member, fd)
            return
        os.ftruncate(fd, member.size)
        os.setxattr(fd, FETCH_XATTR, self._layer + b"\0" + os.fsencode(member.name))


def make_skeleton(toc: esgz.Toc, layer: str, dest: str) -> None:
    """Make the skeleton of eStargz layer `layer` (its blob digest) at `dest` (missing), atomically."""
    rootless = os.geteuid() != 0
    form: WhiteoutForm = "file" if rootless else "chardev"
    extract_members(
        members(toc), _TocData(toc.raw), dest, lambda root_fd: _Skeleton(root_fd, form, rootless, layer), sync=False
    )
