"""The mounts this process sees, read from /proc/self/mountinfo: (mount point, filesystem type), in order."""

from __future__ import annotations

import re

_OCTAL = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space as \040, a newline as \012, a backslash as \134


def mounts() -> list[tuple[str, str]]:
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split(" ")
            found.append((_OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4]), fields[fields.index("-") + 1]))
    return found
