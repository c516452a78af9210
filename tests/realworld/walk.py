"""A rootfs read as a list of entries: what an image holds, as a container would see it.

Run as `python -m tests.realworld.walk ROOT` by an ordinary user (only the user who mounted a rootless rootfs may
enter it), this prints the entries as JSON; the tests call `entries()` directly as root.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import sys
from typing import NamedTuple

# Kept by a union filesystem or a storage driver for itself, never shown in a container: not the image's.
UNION_XATTRS = ("trusted.overlay.", "user.overlay.", "user.containers.", "user.fuseoverlayfs.")


class Entry(NamedTuple):
    kind: str  # f(ile) d(irectory) l(ink) c(har) b(lock) p(ipe) s(ocket)
    uid: int
    gid: int
    mode: int  # permission bits, setuid/setgid/sticky included
    target: str  # a symlink's target
    sha256: str  # a regular file's content
    rdev: str  # a device's major:minor
    xattrs: dict[str, str]  # name -> hex of the value
    hardlink: str  # for a file with several names: the first of its names in the tree


KINDS = {
    stat.S_IFREG: "f",
    stat.S_IFDIR: "d",
    stat.S_IFLNK: "l",
    stat.S_IFCHR: "c",
    stat.S_IFBLK: "b",
    stat.S_IFIFO: "p",
    stat.S_IFSOCK: "s",
}


def _digest(path: str) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        first = True
        while chunk := os.read(fd, 1 << 20):
            if first and path.endswith(".pyc") and _fresh_pyc(path, chunk):
                chunk = chunk[:8] + bytes(4) + chunk[12:]
            first = False
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def _fresh_pyc(path: str, head: bytes) -> bool:
    """A `__pycache__/NAME.TAG.pyc` in the timestamp form whose recorded source mtime and size are its source's:
    compared without that mtime (the time pip or dpkg wrote the source), so that the same code in two fresh
    pycs hashes the same, and a stale pyc (python recompiles it at every start) still differs."""
    directory, name = os.path.split(path)
    if os.path.basename(directory) != "__pycache__" or len(head) < 16:
        return False
    flags, mtime, size = struct.unpack_from("<III", head, 4)
    try:
        st = os.lstat(os.path.join(os.path.dirname(directory), name.split(".")[0] + ".py"))
    except OSError:
        return False
    return flags == 0 and (mtime, size) == (int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF)


def _xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    found = {}
    for name in names:
        if name.startswith(UNION_XATTRS):
            continue
        try:
            found[name] = os.getxattr(path, name, follow_symlinks=False).hex()
        except OSError as e:
            found[name] = f"<{os.strerror(e.errno or 0)}>"
    return found


def entries(root: str) -> dict[str, Entry]:
    """Every entry under root by its path in the image ("/" for root itself); symlinks are never followed."""
    found: dict[str, Entry] = {}
    inodes: dict[tuple[int, int], str] = {}
    pending = ["/"]
    while pending:
        rel = pending.pop()
        path = root + rel if rel != "/" else root
        st = os.lstat(path)
        kind = KINDS.get(stat.S_IFMT(st.st_mode), "?")
        target = os.readlink(path) if kind == "l" else ""
        digest = ""
        hardlink = ""
        if kind == "f":
            try:
                digest = _digest(path)
            except OSError as e:
                digest = f"<{os.strerror(e.errno or 0)}>"
            if st.st_nlink > 1:
                hardlink = inodes.setdefault((st.st_dev, st.st_ino), rel)
        rdev = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if kind in "cb" else ""
        found[rel] = Entry(
            kind, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), target, digest, rdev, _xattrs(path), hardlink
        )
        if kind == "d":
            base = rel.rstrip("/")
            pending.extend(f"{base}/{name}" for name in sorted(os.listdir(path), reverse=True))
    # a hard-link group is named by its first path in sorted order, whatever order the walk met them in
    # (a file whose other names lie outside the tree, or that a union counts oddly, has no group)
    groups: dict[str, list[str]] = {}
    for rel in sorted(found):
        if found[rel].hardlink:
            groups.setdefault(found[rel].hardlink, []).append(rel)
    return {
        rel: e._replace(hardlink=groups[e.hardlink][0] if len(groups[e.hardlink]) > 1 else "") if e.hardlink else e
        for rel, e in found.items()
    }


def main() -> None:
    json.dump({rel: list(e) for rel, e in entries(sys.argv[1]).items()}, sys.stdout)


if __name__ == "__main__":
    main()
