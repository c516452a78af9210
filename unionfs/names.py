"""The names a new entry may take: ones every layer can hold, and not a whiteout's. No FUSE here."""

from __future__ import annotations

import errno
import os

from .errors import UnionError
from .whiteout import is_whiteout_name

NAME_MAX = 255


def check_length(name: str) -> None:
    """ENAMETOOLONG for a name no layer can hold, as a local filesystem answers before it looks anything up: the
    kernel passes FUSE names up to PATH_MAX - 1 bytes long."""
    if len(os.fsencode(name)) > NAME_MAX:
        raise UnionError(errno.ENAMETOOLONG)


def check_name(name: str) -> None:
    """A name a new entry may take: one that fits, and is not a whiteout's."""
    check_length(name)
    if is_whiteout_name(name):
        raise UnionError(errno.EINVAL, f"{name!r} is reserved for whiteouts")
