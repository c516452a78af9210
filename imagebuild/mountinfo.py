"""The mounts a process sees, read from /proc/PID/mountinfo: (mount point, filesystem type), in order."""

from __future__ import annotations

import re

UNION_FSTYPE = "fuse.unionfs"  # what mountinfo calls a unionfs mount
_OCTAL = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space as \040, a newline as \012, a backslash as \134


def mounts(pid: int | str = "self") -> list[tuple[str, str]]:
    found = []
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split(" ")
            found.append((_OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4]), fields[fields.index("-") + 1]))
    return found
