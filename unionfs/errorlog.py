"""Bugs answered EIO, recorded: an unexpected exception in a request handler is logged once with its traceback
and, where the mount was given a file for it (`unionfs mount --error-file FILE`, or `--error-fd N`, an open
file, as unionfs.api.UnionMount passes an unnamed one), appended there as one line, so that the caller
(UnionMount.io_errors) learns that a request failed for no reason of its own.
No FUSE here.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("unionfs")


class IoErrors:
    """Where the daemon records the requests it answered EIO because of a bug (`path`: a file to append one line
    each to; None: the log alone)."""

    def __init__(self, path: str | None = None, fd: int | None = None) -> None:
        self.path = path
        self.fd = fd
        self.count = 0

    def record(self, handler: str, args: tuple[object, ...], exc: BaseException) -> None:
        """A handler failed with `exc`, unexpected: answered EIO. Logs it with its traceback, and records it."""
        self.count += 1
        log.error("internal error in %s%r: answered EIO", handler, args, exc_info=exc)
        if self.path is None and self.fd is None:
            return
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {handler}{args!r}: {type(exc).__name__}: {exc}"
        data = (" ".join(line.split()) + "\n").encode(errors="replace")
        if self.fd is not None:
            try:
                os.write(self.fd, data)
            except OSError as error:
                log.error("cannot record it on fd %d: %s", self.fd, error)
        if self.path is None:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            log.error("cannot record it in %s: %s", self.path, error)
            return
        try:
            os.write(fd, data)
        except OSError as error:
            log.error("cannot record it in %s: %s", self.path, error)
        finally:
            os.close(fd)


def read_records(fd: int) -> list[str]:
    """The records in an open file IoErrors appended to, one a line (read from its start, the offset kept)."""
    data = b""
    while chunk := os.pread(fd, 1 << 16, len(data)):
        data += chunk
    return [line for line in data.decode(errors="replace").splitlines() if line.strip()]
