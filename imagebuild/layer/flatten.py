"""An image's layers flattened into one rootfs tar: what a union mount of them shows, as tar entries.

Layers are read top first. An entry is taken from the highest layer that has it; a lower layer's entry is left
out when a higher layer has the same name, whites it out (`.wh.NAME`, or a char device 0/0), marks a directory
above it opaque (`.wh..wh..opq`), or has a non-directory where it has a parent. Whiteouts apply only to the
layers below theirs, as in a union mount. Whiteout entries themselves never reach the output.

The output is sorted by name (parents first), with owners, modes, mtimes and xattrs (PAX) as the layers carry
them, i.e. the ids the image's own root sees. Hard links come last, each after its target; one whose target
comes from another layer (or is hidden) is written as a copy of the file it named in its own layer.
"""

from __future__ import annotations

import contextlib
import copy
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, BinaryIO

from imagebuild.layer import whiteouts as wh
from imagebuild.layer._fs import CHUNK
from imagebuild.layer.errors import LayerError
from imagebuild.layer.extract import _decompressed

Opener = Callable[[], BinaryIO]


def _norm(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


def _ancestors(path: str) -> Iterator[str]:
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


class _Selection:
    """Which entry of which layer each path of the merged tree comes from."""

    def __init__(self) -> None:
        self.taken: dict[str, tuple[int, tarfile.TarInfo]] = {}
        self.hidden: set[str] = set()  # whited out by a higher layer: the path and all below it
        self.opaque: set[str] = set()  # made opaque by a higher layer: everything below it
        self.files: set[str] = set()  # a non-directory in a higher layer: nothing below it

    def blocked(self, path: str) -> bool:
        if path in self.taken or path in self.hidden:
            return True
        return any(a in self.hidden or a in self.opaque or a in self.files for a in _ancestors(path))

    def add_layer(self, index: int, members: list[tarfile.TarInfo]) -> None:
        hidden: set[str] = set()
        opaque: set[str] = set()
        for member in members:
            path = _norm(member.name)
            if not path:
                continue  # the root: the output has none of its own
            parent, base = posixpath.split(path)
            if base == wh.OPAQUE_MARKER:
                opaque.add(parent)
                continue
            if wh.is_reserved_name(base):  # a whiteout file, or a name reserved for other tools' metadata
                target = wh.whited_out_target(base)
                if target is not None:
                    hidden.add(posixpath.join(parent, target))
                continue
            if member.ischr() and wh.is_chardev_whiteout(stat.S_IFCHR, os.makedev(member.devmajor, member.devminor)):
                hidden.add(path)
                continue
            if self.blocked(path):
                continue
            self.taken[path] = (index, member)
            if not member.isdir():
                self.files.add(path)
        self.hidden |= hidden
        self.opaque |= opaque


def flatten(layers: list[Opener], out: IO[bytes], scratch: str) -> None:
    """Write the rootfs tar of `layers` (bottom first, each opening a plain, gzip or zstd layer tar) to `out`;
    `scratch` is a directory for the layers' plain tars while they are read."""
    work = tempfile.mkdtemp(prefix="flatten-", dir=scratch)
    try:
        with contextlib.ExitStack() as stack:
            tars: list[tarfile.TarFile] = []
            for i, opener in enumerate(layers):
                path = f"{work}/{i}.tar"
                with opener() as src, contextlib.ExitStack() as inner, open(path, "wb") as f:
                    shutil.copyfileobj(_decompressed(src, inner), f, CHUNK)
                tars.append(stack.enter_context(tarfile.open(path, "r:", encoding="utf-8", errors="surrogateescape")))
            selection = _Selection()
            for index in reversed(range(len(tars))):
                selection.add_layer(index, tars[index].getmembers())
            with tarfile.open(
                fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape"
            ) as result:
                _write(selection, tars, result)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise LayerError(f"cannot flatten the image's layers: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write(selection: _Selection, tars: list[tarfile.TarFile], result: tarfile.TarFile) -> None:
    links = []
    for path in sorted(selection.taken):
        index, member = selection.taken[path]
        if member.islnk():
            links.append(path)
            continue
        _add(result, tars[index], member, path)
    for path in links:
        index, member = selection.taken[path]
        target = _norm(member.linkname)
        chosen = selection.taken.get(target)
        if chosen is not None and chosen[0] == index and chosen[1].isreg():
            info = copy.copy(member)
            info.name, info.linkname = path, target
            result.addfile(info)
            continue
        try:  # its target is not what the merged tree shows there: the file it named in its own layer
            source = tars[index].getmember(member.linkname)
        except KeyError:
            raise LayerError(f"'{path}': a hard link to '{target}', which its layer does not hold") from None
        copied = copy.copy(source)
        copied.mode, copied.uid, copied.gid, copied.mtime = member.mode, member.uid, member.gid, member.mtime
        _add(result, tars[index], copied, path)


def _add(result: tarfile.TarFile, tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
    info = copy.copy(member)
    info.name = path
    if member.isreg():
        data = tar.extractfile(member)
        result.addfile(info, data)
    else:
        result.addfile(info)
