"""A layer's tar against the layer directory a store mounts: do they hold the same entries?

Both sides are read as entries a mount would show: path, type, mode, owner, mtime (ns), size of a regular file,
target of a symlink, number of a device. The tar's side follows extraction (`extract.py`): names normalised, the
last entry for a name wins, a hard link is its target, a whiteout in either form is `.wh.NAME`, an opaque marker
is `DIR/.wh..wh..opq`. The directory's side is what the tar writer reads (`tar.layer_headers`): ownership records
applied, so a rootless layer compares as its mount shows it. Whiteouts and opaque markers compare by name only,
as their own metadata never shows; a symlink's mode never counts, nor, in a rootless layer, the owner of a symlink
or fifo, which such a layer cannot keep (Linux allows no user xattrs there). A directory the tar does not list but
holds entries in is the parent extraction made for them.
"""

from __future__ import annotations

import datetime
import os
import stat
import tarfile
from dataclasses import dataclass
from typing import BinaryIO

from imagebuild.layer import whiteouts as wh
from imagebuild.layer.errors import LayerError
from imagebuild.layer.extract import _mtime_ns, _open_tar, _split
from imagebuild.layer.tar import layer_headers

_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "directory",
    tarfile.SYMTYPE: "symlink",
    tarfile.FIFOTYPE: "fifo",
    tarfile.CHRTYPE: "char device",
    tarfile.BLKTYPE: "block device",
}
WHITEOUT = "whiteout"
OPAQUE = "opaque marker"


@dataclass(frozen=True)
class Entry:
    kind: str  # file, directory, symlink, fifo, char device, block device, whiteout, opaque marker
    mode: int = 0  # permission bits
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    size: int = 0  # of a regular file
    target: str = ""  # a symlink's target; a device's `major:minor`


def _entry(info: tarfile.TarInfo, mtime_ns: int) -> Entry:
    kind = _KINDS.get(info.type)
    if kind is None:
        raise LayerError(f"{info.name!r}: unsupported tar entry type {info.type!r}")
    target = info.linkname if info.issym() else f"{info.devmajor}:{info.devminor}" if info.isdev() else ""
    size = info.size if kind == "file" else 0
    return Entry(kind, stat.S_IMODE(info.mode), info.uid, info.gid, mtime_ns, size, target)


def _marker_path(parts: tuple[str, ...], name: str) -> str:
    return "/".join((*parts, name))


def tar_entries(src: BinaryIO) -> dict[str, Entry]:
    """The entries of a layer tar (plain, gzip or zstd) as extraction leaves them."""
    entries: dict[str, Entry] = {}
    try:
        with _open_tar(src) as tar:
            for info in tar:
                _add_member(entries, info)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise LayerError(f"unreadable layer tar: {exc}") from exc
    return entries


def _add_member(entries: dict[str, Entry], info: tarfile.TarInfo) -> None:
    parts = _split(info.name)
    if not parts:
        return  # the layer root: no entry of its own in the directory either
    name = parts[-1]
    if name == wh.OPAQUE_MARKER:
        entries[_marker_path(parts[:-1], name)] = Entry(OPAQUE)
        return
    if name.startswith(wh.WH_PREFIX):
        hidden = wh.whited_out_target(name)
        if hidden is not None:
            _put(entries, _marker_path(parts[:-1], wh.whiteout_name(hidden)), Entry(WHITEOUT))
        return
    if info.ischr() and info.devmajor == 0 and info.devminor == 0:
        _put(entries, _marker_path(parts[:-1], wh.whiteout_name(name)), Entry(WHITEOUT))
        return
    path = "/".join(parts)
    if info.islnk():
        target = entries.get("/".join(_split(info.linkname, info.name)))
        if target is None:
            raise LayerError(f"{info.name!r}: hard link target {info.linkname!r} is not an entry before it")
        _put(entries, path, target)
        return
    _put(entries, path, _entry(info, _mtime_ns(info)))


def _put(entries: dict[str, Entry], path: str, entry: Entry) -> None:
    """The last entry for a name wins; a non-directory replacing a directory takes its contents with it."""
    old = entries.get(path)
    if old is not None and old.kind == "directory" and entry.kind != "directory":
        below = path + "/"
        for name in [n for n in entries if n.startswith(below)]:
            del entries[name]
    entries[path] = entry


def directory_entries(layer_dir: str, *, host_owner: tuple[int, int] | None = None) -> dict[str, Entry]:
    """The entries of a layer directory as its tar would carry them, with exact mtimes."""
    entries: dict[str, Entry] = {}
    for info, mtime_ns in layer_headers(layer_dir, host_owner=host_owner):
        path = info.name.rstrip("/")
        name = path.rsplit("/", 1)[-1]
        if name == wh.OPAQUE_MARKER:
            entries[path] = Entry(OPAQUE)
        elif name.startswith(wh.WH_PREFIX):
            entries[path] = Entry(WHITEOUT)
        elif info.islnk():
            entries[path] = entries[info.linkname]
        else:
            entries[path] = _entry(info, mtime_ns)
    return entries


def _when(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    try:
        text = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        text = f"@{seconds}"
    return text + (f".{rest:09d}" if rest else "") + "Z"


def _fields(a: Entry, b: Entry, rootless: bool) -> list[tuple[str, str, str]]:
    """(field, directory's value, tar's value) for each field in which `a` (directory) and `b` (tar) differ."""
    if a.kind != b.kind:
        return [("type", a.kind, b.kind)]
    if a.kind in (WHITEOUT, OPAQUE):
        return []
    found: list[tuple[str, str, str]] = []
    if a.kind != "symlink" and a.mode != b.mode:
        found.append(("mode", f"{a.mode:04o}", f"{b.mode:04o}"))
    if not (rootless and a.kind in ("symlink", "fifo")) and (a.uid, a.gid) != (b.uid, b.gid):
        found.append(("owner", f"{a.uid}:{a.gid}", f"{b.uid}:{b.gid}"))
    if a.mtime_ns != b.mtime_ns:
        found.append(("mtime", _when(a.mtime_ns), _when(b.mtime_ns)))
    if a.size != b.size:
        found.append(("size", str(a.size), str(b.size)))
    if a.target != b.target:
        found.append(("target", repr(a.target), repr(b.target)))
    return found


def differences(directory: dict[str, Entry], tar: dict[str, Entry], *, rootless: bool = False) -> list[str]:
    """How the directory's entries differ from the tar's, one phrase per entry, in path order."""
    parents = {p.rsplit("/", 1)[0] for p in tar if "/" in p}
    implicit = {"/".join(p.split("/")[:n]) for p in parents for n in range(1, p.count("/") + 2)}
    found: list[str] = []
    for path in sorted(directory.keys() | tar.keys(), key=os.fsencode):
        mine, theirs = directory.get(path), tar.get(path)
        if theirs is None:
            assert mine is not None
            if not (mine.kind == "directory" and path in implicit):
                found.append(f"{path}: only in the directory")
        elif mine is None:
            found.append(f"{path}: only in the tar")
        else:
            fields = _fields(mine, theirs, rootless)
            if fields:
                found.append(f"{path}: " + ", ".join(f"{f} {d} here, {t} in the tar" for f, d, t in fields))
    return found
