"""Lazy lower layers: files whose data is fetched on first open, by a Fetcher the mount is given.

A lazy layer is an ordinary layer directory (a *skeleton*: every directory, link, device and whiteout as an
extracted layer has it) whose non-empty regular files are sparse placeholders of the right size carrying the
xattr `user.unionfs.fetch`: a key the fetcher understands. Everything else a layer does (views, stat, xattrs,
hard links, whiteouts, copy-up planning) works on the skeleton unchanged; only opening a file's data asks the
fetcher, which returns a read-only fd of the file's complete, verified data, or raises OSError (EIO).

unionfs knows nothing of where the data comes from: the mount option `fetcher=MODULE.CALLABLE` names a callable
the daemon imports and calls with the option `fetchspec=` (a string, say a file naming a registry and a cache),
which returns the Fetcher. The daemon stays `unionfs mount`, so everything that finds, watches and reaps daemons
treats a lazy mount as any other.
"""

from __future__ import annotations

import errno
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .errors import ConfigError
from .whiteout import FETCH_XATTR


class Fetcher(Protocol):
    def open(self, key: bytes) -> int:
        """An O_RDONLY fd of the complete, verified data the key names; OSError (EIO) when it cannot be had."""
        ...


@dataclass(frozen=True)
class Pending:
    """A file whose data is yet to be fetched: its fetcher and key. Fetching may take a while (a download), so the
    daemon runs `fetch` in a worker thread, which touches no fd of the loop's."""

    fetcher: Fetcher
    key: bytes

    def fetch(self) -> int:
        return self.fetcher.open(self.key)


def load_fetcher(dotted: str, spec: str) -> Fetcher:
    """The fetcher `fetcher=MODULE.CALLABLE` names, made from `fetchspec=`; ConfigError (one line: which option,
    what failed, what to do) when it cannot be: a module that does not import, a callable it lacks, a factory that
    raises or gives something without `open`."""
    module, _, name = dotted.rpartition(".")
    where = f"-o fetcher={dotted}"
    if not module or not name:
        raise ConfigError(f"{where}: not MODULE.CALLABLE: name the callable that makes the fetcher, with its module")
    try:
        factory = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{where}: no module {exc.name!r}: install it, or put it on the daemon's path") from None
    except AttributeError:
        raise ConfigError(f"{where}: module {module!r} has no {name!r}: name a callable it defines") from None
    except Exception as exc:  # noqa: BLE001 (the module's own failure, whatever it is, is the user's to see)
        raise ConfigError(f"{where}: importing {module!r} failed: {_one_line(exc)}") from None
    if not callable(factory):
        raise ConfigError(f"{where}: {module}.{name} is not callable: name the callable that makes the fetcher")
    try:
        fetcher = factory(spec)
    except Exception as exc:  # noqa: BLE001 (as above)
        raise ConfigError(f"{where}: {name}(fetchspec={spec!r}) failed: {_one_line(exc)}: check fetchspec=") from None
    if not callable(getattr(fetcher, "open", None)):
        raise ConfigError(f"{where}: {name}(...) gave a {type(fetcher).__name__}, not a fetcher (no open method)")
    made: Fetcher = fetcher
    return made


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def fetch_key(fd: int) -> bytes | None:
    """The fetch key of an open placeholder, None for a file whose data is here."""
    return key_at(lambda name: os.getxattr(fd, name))


def key_at(getxattr: Callable[[str], bytes]) -> bytes | None:
    """The fetch key `getxattr(FETCH_XATTR)` gives, None for a file whose data is here."""
    try:
        return getxattr(FETCH_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def open_data(fd: int, fetcher: Fetcher | None) -> int:
    """`fd` itself, or for a placeholder (whose fd is closed) an fd of its fetched data."""
    if fetcher is None:
        return fd
    try:
        key = fetch_key(fd)
    except BaseException:
        os.close(fd)
        raise
    if key is None:
        return fd
    os.close(fd)
    return fetcher.open(key)
