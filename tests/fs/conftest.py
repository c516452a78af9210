from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support import UnionMount, fuse_usable


@pytest.fixture(autouse=True)
def _needs_fuse() -> None:
    reason = fuse_usable()
    if reason is not None:
        pytest.skip(f"FUSE mounts cannot be made here: {reason}")


class Mounter:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.mounts: list[UnionMount] = []

    def __call__(
        self,
        lowers: Sequence[Path],
        upper: Path | None = None,
        work: Path | None = None,
        options: Sequence[str] = (),
        name: str = "mnt",
    ) -> UnionMount:
        mount = UnionMount(self.base / name, lowers, upper, work, options)
        self.mounts.append(mount)
        return mount.open()

    def close(self) -> None:
        for mount in self.mounts:
            mount.close()


@pytest.fixture
def mounter(tmp_path: Path) -> Iterator[Mounter]:
    m = Mounter(tmp_path)
    try:
        yield m
    finally:
        m.close()
