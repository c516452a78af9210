"""Ownership an unprivileged writer cannot set for real, kept in `user.containers.override_stat`.

The value is `uid:gid:mode` (octal permission bits, as fuse-overlayfs reads it) optionally followed by
`:type`, where type is one of file, dir, symlink, pipe, socket, `block-MAJOR-MINOR`, `char-MAJOR-MINOR`
(the extended form fuse-overlayfs 1.15 and containers/storage write, which lets devices be recorded on a
placeholder file). Older readers parse the first three fields and ignore the rest.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from .errors import UnionfsError

TYPE_NAMES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "pipe",
    stat.S_IFSOCK: "socket",
}
NAMED_TYPES = {name: kind for kind, name in TYPE_NAMES.items()}


class OverrideError(UnionfsError, ValueError):
    """A malformed override_stat value."""


@dataclass(frozen=True, slots=True)
class OverrideStat:
    uid: int
    gid: int
    mode: int  # permission bits, plus type bits when the record says the type (0 type: take the disk's)
    rdev: int = 0

    @property
    def file_type(self) -> int:
        return stat.S_IFMT(self.mode)

    def encode(self) -> bytes:
        text = f"{self.uid}:{self.gid}:{stat.S_IMODE(self.mode):04o}"
        kind = self.file_type
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            prefix = "char" if kind == stat.S_IFCHR else "block"
            text += f":{prefix}-{os.major(self.rdev)}-{os.minor(self.rdev)}"
        elif kind in TYPE_NAMES:
            text += f":{TYPE_NAMES[kind]}"
        return text.encode()

    def apply(self, st: os.stat_result) -> os.stat_result:
        """The stat a user should see: owner, permissions and (when recorded) type and device number."""
        kind = self.file_type or stat.S_IFMT(st.st_mode)
        rdev = self.rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else st.st_rdev
        return replace_stat(st, uid=self.uid, gid=self.gid, mode=kind | stat.S_IMODE(self.mode), rdev=rdev)


def parse(value: bytes) -> OverrideStat:
    try:
        fields = value.decode("ascii").strip().split(":")
        uid, gid, mode = int(fields[0]), int(fields[1]), int(fields[2], 8)
    except (UnicodeDecodeError, ValueError, IndexError):
        raise OverrideError(f"malformed override_stat {value!r}") from None
    if uid < 0 or gid < 0 or mode < 0 or mode > 0o177777:
        raise OverrideError(f"out-of-range override_stat {value!r}")
    rdev = 0
    if len(fields) > 3:
        kind_name = fields[3]
        if kind_name.startswith(("char-", "block-")):
            try:
                prefix, major, minor = kind_name.split("-")
                rdev = os.makedev(int(major), int(minor))
            except ValueError:
                raise OverrideError(f"malformed device in override_stat {value!r}") from None
            kind = stat.S_IFCHR if prefix == "char" else stat.S_IFBLK
        elif kind_name in NAMED_TYPES:
            kind = NAMED_TYPES[kind_name]
        else:
            raise OverrideError(f"unknown file type in override_stat {value!r}")
        mode = kind | stat.S_IMODE(mode)
    return OverrideStat(uid, gid, mode, rdev)


def replace_stat(
    st: os.stat_result,
    *,
    uid: int | None = None,
    gid: int | None = None,
    mode: int | None = None,
    rdev: int | None = None,
) -> os.stat_result:
    """A copy of `st` with some fields replaced (os.stat_result is immutable)."""
    fields = list(st[:10])
    if mode is not None:
        fields[0] = mode
    if uid is not None:
        fields[4] = uid
    if gid is not None:
        fields[5] = gid
    extra = {
        "st_atime": st.st_atime,
        "st_mtime": st.st_mtime,
        "st_ctime": st.st_ctime,
        "st_atime_ns": st.st_atime_ns,
        "st_mtime_ns": st.st_mtime_ns,
        "st_ctime_ns": st.st_ctime_ns,
        "st_blksize": st.st_blksize,
        "st_blocks": st.st_blocks,
        "st_rdev": st.st_rdev if rdev is None else rdev,
    }
    return os.stat_result(fields, extra)
