"""A Fetcher for tests of lazy layers through a real mount (`-o fetcher=tests.fs.stubfetcher.from_spec,fetchspec=DIR`):
a key names a file in DIR; while DIR/hold-KEY exists, the fetch of KEY waits (up to a minute), after writing
DIR/started-KEY. A stand-in for a slow download."""

from __future__ import annotations

import os
import time


class HeldFetcher:
    def __init__(self, root: str) -> None:
        self.root = root

    def open(self, key: bytes) -> int:
        name = os.fsdecode(key)
        with open(os.path.join(self.root, f"started-{name}"), "w"):
            pass
        deadline = time.monotonic() + 60
        while os.path.exists(os.path.join(self.root, f"hold-{name}")) and time.monotonic() < deadline:
            time.sleep(0.02)
        return os.open(os.path.join(self.root, name), os.O_RDONLY | os.O_CLOEXEC)


def from_spec(spec: str) -> HeldFetcher:
    return HeldFetcher(spec)
