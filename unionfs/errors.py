"""Errors: the one root everything unionfs raises to its callers derives from. No pyfuse3 here: ops.py
translates.

UnionfsError is the root, with the exit status the CLI gives it. Its kinds: ConfigError (a mount configuration
to fix; a usage error, status 2), MountError (a mount or unmount through the API failed), UnmountError (a mount
is still there), and UnionError, the errno a filesystem operation answers (raised inside the daemon, turned
into the FUSE reply at the edge).
"""

from __future__ import annotations

import errno
import os

USAGE_STATUS = 2
FAILURE_STATUS = 1


class UnionfsError(Exception):
    """The root of every error unionfs raises to its callers; the message is one line: what, where, what to do."""

    exit_status = FAILURE_STATUS


class UnionError(OSError, UnionfsError):
    """A filesystem-level failure carrying the errno the caller should see."""

    def __init__(self, err: int, detail: str = "") -> None:
        super().__init__(err, detail or os.strerror(err))


class ConfigError(UnionfsError):
    """A mount configuration the user must fix; the message is one line: what, where, what to do."""

    exit_status = USAGE_STATUS


class MountError(UnionfsError):
    """The mount or unmount failed; the message is the CLI's one-line explanation."""


class UnmountError(UnionfsError):
    """The mount is still there; the message says why in one line."""


def enoent(detail: str = "") -> UnionError:
    return UnionError(errno.ENOENT, detail)
