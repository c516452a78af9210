"""Reading a Dockerfile's text as logical lines, as docker's parser does.

A logical line is an instruction with its continuation lines joined: the escape character
at the end of a line (trailing blanks allowed) continues it on the next, comment lines and
blank lines inside a continuation are skipped, and continuation lines keep their leading
whitespace. Heredoc bodies are read separately, raw, after the line that announced them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOM = "\ufeff"


@dataclass(frozen=True)
class LogicalLine:
    """An instruction's text and the 1-based lines it spans."""

    text: str
    line: int
    end_line: int


def split_lines(text: str) -> list[str]:
    """Physical lines without their line ending (``\\n`` or ``\\r\\n``), BOM removed."""
    text = text.removeprefix(_BOM)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


class LineReader:
    """A cursor over physical lines that hands out logical lines and heredoc bodies."""

    def __init__(self, lines: list[str], escape: str) -> None:
        self.lines = lines
        self.pos = 0  # index of the next unread line; equals the 1-based number of the last read
        esc = re.escape(escape)
        # The escape at the end continues the line unless it is itself escaped ("\\").
        self._continuation = re.compile(rf"(?:(?<=[^{esc}])|^){esc}[ \t]*$")

    @property
    def last_line(self) -> int:
        """The 1-based number of the last line read (0 before any)."""
        return self.pos

    def _take(self) -> str:
        line = self.lines[self.pos]
        self.pos += 1
        return line

    def _trim_continuation(self, line: str) -> tuple[str, bool]:
        """The line without a trailing continuation, and whether it ends the instruction."""
        match = self._continuation.search(line)
        if match is None:
            return line, True
        return line[: match.start()], False

    def next_logical(self) -> LogicalLine | None:
        """The next instruction's joined text, or None at the end of the file."""
        while self.pos < len(self.lines):
            first = self._take().lstrip()
            if first.startswith("#"):
                continue
            text, complete = self._trim_continuation(first)
            if complete and not text:
                continue
            start = self.pos
            parts = [text]
            while not complete and self.pos < len(self.lines):
                line = self._take()
                if is_comment(line) or not line.strip():
                    continue
                text, complete = self._trim_continuation(line)
                parts.append(text)
            joined = "".join(parts)
            if joined.strip():  # a lone continuation character followed by nothing is no instruction
                return LogicalLine(joined, start, self.pos)
        return None

    def heredoc_body(self, name: str, chomp_tabs: bool) -> str | None:
        """The body lines up to the line ``name`` (after leading tabs when chomping).

        Returns None when the file ends first.
        """
        body: list[str] = []
        while self.pos < len(self.lines):
            line = self._take()
            if (line.lstrip("\t") if chomp_tabs else line) == name:
                return "".join(body)
            body.append(line + "\n")
        return None
