"""The one root of the errors imagebuild raises for a user to act on: the CLI prints any of them as one line,
`imagebuild: error: ...`, and exits with its `status`. Every package of imagebuild derives its errors from it."""

from __future__ import annotations


class ImagebuildError(Exception):
    """A failure the user can act on; the message says what, where and what to do. `status`: the exit status."""

    status: int = 1


class BuildError(ImagebuildError):
    """A failure of a command or a build step, with the exit status the CLI gives (a RUN step's own, say)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
