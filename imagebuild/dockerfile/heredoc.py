"""Finding heredoc announcements (``<<EOF``, ``<<-EOF``, ``<<"EOF"``, ``3<<EOF``) in a line.

As in docker, the line is split into shell words (quotes and escapes kept) and every word
that is exactly ``[fd]<<[-]delimiter`` announces one heredoc, in order. A delimiter with any
quoted part (``"EOF"``, ``'EOF'``, ``E"O"F``) turns expansion of the body off. Detection always
uses ``\\`` as the escape, whatever the ``# escape=`` directive says (docker does the same).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ExpansionError
from .expand import Lexer

_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_NO_ENV: dict[str, str] = {}
_LINE_LEXER = Lexer(raw_quotes=True, raw_escapes=True, skip_unset=True)
_NAME_LEXER = Lexer(skip_unset=True)
_RAW_NAME_LEXER = Lexer(raw_quotes=True, skip_unset=True)


@dataclass(frozen=True)
class HeredocMark:
    """A heredoc announced in a line; its body is read from the lines that follow."""

    name: str
    chomp_tabs: bool
    expand: bool
    fd: int | None


def parse_heredoc_word(word: str) -> HeredocMark | None:
    """The heredoc ``word`` announces, or None when it is not a heredoc word."""
    match = _HEREDOC.match(word)
    if match is None or not match.group(3):
        return None
    fd_text, dash, rest = match.groups()
    try:
        words = _NAME_LEXER.process(rest, _NO_ENV)[1]
        raw_words = _RAW_NAME_LEXER.process(rest, _NO_ENV)[1]
    except ExpansionError:
        return None
    if len(words) != 1 or len(raw_words) != 1:
        return None
    expand = _count_quotes(words[0]) == _count_quotes(raw_words[0])
    fd = int(fd_text) if fd_text else None
    return HeredocMark(name=words[0], chomp_tabs=dash == "-", expand=expand, fd=fd)


def find_heredocs(line: str) -> list[HeredocMark]:
    """Every heredoc the line announces, in order."""
    if "<<" not in line:
        return []
    try:
        words = _LINE_LEXER.process(line, _NO_ENV)[1]
    except ExpansionError:
        return []
    return [mark for word in words if (mark := parse_heredoc_word(word)) is not None]


def chomp_tabs(content: str) -> str:
    """``content`` with the leading tabs of every line removed (``<<-``)."""
    return re.sub(r"(?m)^\t+", "", content)


def _count_quotes(text: str) -> int:
    return text.count("'") + text.count('"')
