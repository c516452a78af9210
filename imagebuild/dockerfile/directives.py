"""Parser directives: ``# key=value`` lines at the very top of a Dockerfile.

Only ``syntax``, ``escape`` and ``check`` are directives (keys are case-insensitive). The first
line that is not one (an instruction, a blank line, any other comment, even an unknown
``# key=value``) ends them; later lines of that form are plain comments.
"""

from __future__ import annotations

import re

from .errors import InstructionError
from .model import DEFAULT_ESCAPE

KNOWN_DIRECTIVES = frozenset({"syntax", "escape", "check"})
ESCAPE_CHARS = frozenset({"\\", "`"})

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")


def read_directives(lines: list[str]) -> dict[str, str]:
    """The directives at the top of ``lines``, keys lower-cased.

    Raises :class:`DirectiveError` for a repeated directive or an escape that is neither
    ``\\`` nor a backtick.
    """
    found: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        match = _DIRECTIVE.match(line.lstrip())
        if match is None or match.group(1).lower() not in KNOWN_DIRECTIVES:
            break
        key, value = match.group(1).lower(), match.group(2)
        if key in found:
            raise DirectiveError(number, f"only one {key} parser directive can be used")
        if key == "escape" and value not in ESCAPE_CHARS:
            raise DirectiveError(number, f"invalid escape token '{value}' does not match ` or \\")
        found[key] = value
    return found


def escape_of(directives: dict[str, str]) -> str:
    """The escape character the directives choose."""
    return directives.get("escape", DEFAULT_ESCAPE)


class DirectiveError(InstructionError):
    """A bad directive, with the line it is on."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
