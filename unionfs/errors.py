"""Errors raised by the core filesystem code. No pyfuse3 here: ops.py translates."""

from __future__ import annotations

import errno
import os


class UnionError(OSError):
    """A filesystem-level failure carrying the errno the caller should see."""

    def __init__(self, err: int, detail: str = "") -> None:
        super().__init__(err, detail or os.strerror(err))


class ConfigError(Exception):
    """A mount configuration the user must fix; the message is one line: what, where, what to do."""


def enoent(detail: str = "") -> UnionError:
    return UnionError(errno.ENOENT, detail)
