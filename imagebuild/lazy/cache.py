"""The lazy file cache: the data of fetched files, verified, named by their sha256 (`STORE/lazy/files/HEX`), and
the compressed gzip members they came from (`m-LAYER-OFFSET-LENGTH`), from which a later `pull` of the image
assembles the layer blobs, fetching only the rest.

Crash-safe: a file is written under a temporary name (`.tmp-*`, which `check --repair` removes), flushed and
renamed; a partial file never has a final name. Bounded: after each addition the least recently used files (by
mtime, which a hit renews) go until the cache holds at most its limit, `IMAGEBUILD_LAZY_CACHE_SIZE` (bytes, or
with a K/M/G suffix; default 2G). A file removed while a mount has it open stays readable through that fd.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable

from imagebuild.errors import BuildError

DEFAULT_LIMIT = 2 << 30
LIMIT_ENV = "IMAGEBUILD_LAZY_CACHE_SIZE"
TEMP_PREFIX = ".tmp-"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """`123`, `500M`, `2G` (powers of 1024) as bytes."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    number = value[: len(value) - len(unit)]
    if not number.isdigit():
        raise BuildError(f"{LIMIT_ENV}={text}: give a size in bytes, or with K, M or G (say 2G)")
    return int(number) * _UNITS[unit]


def limit_from_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> int:
    text = environ.get(LIMIT_ENV)
    return DEFAULT_LIMIT if not text else parse_size(text)


class FileCache:
    def __init__(self, root: str, limit: int = DEFAULT_LIMIT) -> None:
        self.root = root
        self.limit = limit
        os.makedirs(root, exist_ok=True)

    def path(self, digest: str) -> str:
        return os.path.join(self.root, digest.removeprefix("sha256:"))

    def open(self, digest: str) -> int | None:
        """A read-only fd of a cached file (its use renewed), or None when it is not here."""
        try:
            fd = os.open(self.path(digest), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):
            os.utime(fd)
        return fd

    def put(self, digest: str, write: Callable[[int], None], evict: bool = True) -> int:
        """Write a file with `write(fd)` under a temporary name, then give it its name; returns a read-only fd.
        `evict`: bring the cache back to its limit after (a scan of it: once per fetched file, not per part)."""
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.root)
        found = None
        try:
            try:
                write(fd)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, 0o644)
            # opened before it is named: another thread's eviction may remove it once it is
            found = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            os.rename(tmp, self.path(digest))
        except BaseException:
            if found is not None:
                os.close(found)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if evict:
            self.evict(keep=self.path(digest))
        return found

    def evict(self, keep: str | None = None) -> list[tuple[str, int]]:
        """Remove the least recently used files until the cache holds at most its limit; returns their paths and
        sizes."""
        files = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.startswith(TEMP_PREFIX) or not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                files.append((st.st_mtime_ns, st.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        removed = []
        for _, size, path in sorted(files):
            if total <= self.limit:
                break
            if path == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size
            removed.append((path, size))
        return removed

    def leftovers(self) -> list[str]:
        """Temporary files a crash (or a killed daemon) left behind."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(os.path.join(self.root, n) for n in names if n.startswith(TEMP_PREFIX))


def member_key(layer: str, offset: int, length: int) -> str:
    """The cache name of a layer blob's bytes [offset, offset + length): one gzip member a fetch read whole."""
    return f"m-{layer.removeprefix('sha256:')}-{offset}-{length}"


def cached_members(root: str, layer: str) -> list[tuple[int, int, str]]:
    """The pieces of blob `layer` the cache at `root` holds: (offset, length, path), by offset."""
    prefix = f"m-{layer.removeprefix('sha256:')}-"
    found = []
    with contextlib.suppress(FileNotFoundError), os.scandir(root) as entries:
        for entry in entries:
            offset, _, length = entry.name.removeprefix(prefix).partition("-")
            if entry.name.startswith(prefix) and offset.isdigit() and length.isdigit():
                found.append((int(offset), int(length), entry.path))
    return sorted(found)


def lazy_leftovers(lazy_root: str) -> list[str]:
    """What interrupted lazy work left in `STORE/lazy`: temporary files, half-made skeletons."""
    found = FileCache(os.path.join(lazy_root, "files")).leftovers() if os.path.isdir(lazy_root) else []
    for sub, marker in (("tocs", TEMP_PREFIX), ("specs", TEMP_PREFIX), ("layers", ".extract-")):
        with contextlib.suppress(FileNotFoundError):
            found += [os.path.join(lazy_root, sub, n) for n in os.listdir(os.path.join(lazy_root, sub)) if marker in n]
    return sorted(found)
