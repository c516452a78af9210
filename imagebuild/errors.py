"""Errors a user can cause: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class BuildError(Exception):
    """A failure the user can act on; the message says what, where and what to do."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
