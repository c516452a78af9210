"""Errors raised while parsing a Dockerfile or expanding variables in it."""

from __future__ import annotations

from imagebuild.errors import ImagebuildError


class DockerfileError(ImagebuildError):
    """A Dockerfile that cannot be parsed: where it failed and why.

    ``line`` is 1-based and is the line where the failing instruction starts, even when the
    instruction continues over several lines or carries heredocs.
    """

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(path, line, message)
        self.path = path
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class InstructionError(ImagebuildError):
    """A problem found in one instruction, before its file and line are known.

    The parser turns it into a :class:`DockerfileError`; it never leaves the package.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ExpansionError(ImagebuildError):
    """Variable substitution failed: bad syntax, unterminated quote or ``${VAR:?message}``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
