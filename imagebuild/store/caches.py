"""The directories of `RUN --mount=type=cache`, kept in the store between builds.

Layout under the store's root:
  caches/<hex>/data      what the RUN sees at the mount's target; <hex> is the sha256 of the cache's id
  caches/<hex>/id        the id, for people reading the store
  caches/<hex>/lock      flock'ed while a RUN uses the cache: shared by `sharing=shared` users, exclusive for
                         `locked` (they wait) and `private`
  caches/<hex>-<n>/      further instances for `sharing=private` when the first is in use

No layer, cache record or image refers to a cache: its content never reaches an image, and a RUN's cache key does
not depend on it. `imagebuild prune --cache` removes every cache not in use.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from imagebuild import userns
from imagebuild.errors import BuildError

CACHES = "caches"


@dataclass(frozen=True)
class Cache:
    path: str  # the directory to mount (`data`)
    created: bool  # made for this use: its owner and mode are still to be set


def _base(root: str, ident: str) -> str:
    return os.path.join(root, CACHES, hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest())


def _open_lock(directory: str, ident: str) -> int:
    os.makedirs(directory, 0o755, exist_ok=True)
    id_file = os.path.join(directory, "id")
    if not os.path.exists(id_file):
        with open(id_file, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(ident + "\n")
    return os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


@contextlib.contextmanager
def use(root: str, ident: str, sharing: str) -> Iterator[Cache]:
    """The cache `ident`, held for as long as the `with` lasts, as `sharing` says."""
    base = _base(root, ident)
    fd = -1
    directory = base
    try:
        if sharing == "private":
            for n in range(1000):
                directory = base if n == 0 else f"{base}-{n}"
                fd = _open_lock(directory, ident)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    os.close(fd)
                    fd = -1
            else:
                raise BuildError(f"cache '{ident}': a thousand private instances in use")
        else:
            fd = _open_lock(directory, ident)
            fcntl.flock(fd, fcntl.LOCK_EX if sharing == "locked" else fcntl.LOCK_SH)
        data = os.path.join(directory, "data")
        try:  # two `shared` users may both find it missing: the mkdir decides which one made it
            os.mkdir(data, 0o755)
            created = True
        except FileExistsError:
            created = False
        yield Cache(data, created)
    finally:
        if fd >= 0:
            os.close(fd)  # drops the lock


def _size(path: str) -> int:
    total = 0
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                total += st.st_blocks * 512
    return total


def _remove(path: str) -> None:
    """Remove a cache's directory; as an ordinary user with subordinate ids, what a RUN's other ids made there
    (apt's _apt, a USER) is removed from inside the namespace that maps them, where the user may."""
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return
    ranges = userns.ranges()
    if ranges is None:
        raise BuildError(f"cannot remove the cache directory {path}: remove it as root")
    namespace = userns.Namespace(*ranges).open()
    try:
        done = subprocess.run([*namespace.enter(), "rm", "-rf", "--", path], capture_output=True, text=True)
    finally:
        namespace.close()
    if done.returncode != 0 or os.path.lexists(path):
        raise BuildError(f"cannot remove the cache directory {path}: {done.stderr.strip() or 'rm failed'}")


def prune(root: str) -> tuple[int, int, int]:
    """Remove every cache no build uses now; returns (removed, bytes freed, skipped because in use)."""
    top = os.path.join(root, CACHES)
    try:
        names = sorted(os.listdir(top))
    except FileNotFoundError:
        return 0, 0, 0
    removed = freed = busy = 0
    for name in names:
        directory = os.path.join(top, name)
        try:
            fd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            fd = -1
        try:
            if fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    busy += 1
                    continue
            size = _size(directory)
            _remove(directory)
            removed += 1
            freed += size
        finally:
            if fd >= 0:
                os.close(fd)
    return removed, freed, busy
