"""A layer directory made whole or not at all: filled in a fresh directory beside its place, flushed, renamed."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable

from imagebuild.layer._fs import O_DIR, fsync_dir, syncfs
from imagebuild.layer.errors import LayerError

IMPLICIT_DIR_MODE = 0o755


def _prepare(dest: str) -> int:
    """Check that `dest` is missing or an empty directory; the mode its root should get."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return IMPLICIT_DIR_MODE
    if not stat.S_ISDIR(st.st_mode):
        raise LayerError(f"{dest}: exists and is not a directory")
    if os.listdir(dest):
        raise LayerError(f"{dest}: not empty")
    return stat.S_IMODE(st.st_mode)


def new_dir(dest_dir: str, sync: bool, fill: Callable[[int, int], None]) -> None:
    """Call `fill(root_fd, root_mode)` on a fresh directory beside `dest_dir`, then rename it there."""
    dest = os.path.abspath(dest_dir)
    root_mode = _prepare(dest)
    parent = os.path.dirname(dest)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.extract-", dir=parent)
    try:
        root_fd = os.open(tmp, O_DIR)
        try:
            fill(root_fd, root_mode)
            if sync:
                syncfs(root_fd)
        finally:
            os.close(root_fd)
        try:
            os.rename(tmp, dest)
        except OSError as exc:
            raise LayerError(f"{dest}: cannot move the extracted layer into place: {exc.strerror}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if sync:
        fsync_dir(parent)
