"""Splitting an instruction's text into its keyword, flags and argument words.

These follow docker's parser: words keep their quotes and escapes (they are removed later,
by expansion), flags lose theirs, and a JSON array is only an exec form when it is a valid
array of strings.
"""

from __future__ import annotations

import json
import re

from .errors import InstructionError

_WHITESPACE = re.compile(r"[\t\v\f\r ]+")

NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"


def split_command(line: str) -> tuple[str, str]:
    """The keyword and the rest of a logical line, both stripped."""
    parts = _WHITESPACE.split(line.strip(), maxsplit=1)
    return parts[0], (parts[1] if len(parts) > 1 else "")


def split_whitespace(rest: str) -> list[str]:
    """Words separated by blanks, no quoting (docker's parseStringsWhitespaceDelimited)."""
    rest = rest.strip()
    return _WHITESPACE.split(rest) if rest else []


def extract_flags(rest: str) -> tuple[list[str], str]:
    """The leading ``--flag[=value]`` words of ``rest`` and the text after them.

    Quotes group and are removed, ``\\`` escapes the next character, and a bare ``--`` ends
    the flags. The first word not starting with ``--`` starts the arguments.
    """
    flags: list[str] = []
    pos = 0
    while True:
        while pos < len(rest) and rest[pos].isspace():
            pos += 1
        if not rest.startswith("--", pos):
            return flags, rest[pos:]
        word, pos = _flag_word(rest, pos)
        if word == "--":
            return flags, rest[pos:]
        flags.append(word)


def _flag_word(text: str, pos: int) -> tuple[str, int]:
    """One flag word starting at ``pos``, unquoted, and the position after it."""
    out: list[str] = []
    quote = ""
    while pos < len(text):
        ch = text[pos]
        pos += 1
        if not quote and ch.isspace():
            break
        if ch == quote:
            quote = ""
            continue
        if not quote and ch in "'\"":
            quote = ch
            continue
        if ch == "\\":
            if pos == len(text):
                break
            ch = text[pos]
            pos += 1
        out.append(ch)
    return "".join(out), pos


def parse_words(rest: str, escape: str) -> list[str]:
    """Words separated by unquoted whitespace, quotes and escapes kept (docker's parseWords).

    Used for ENV, LABEL and ARG, whose ``key="a value"`` must stay one word.
    """
    words: list[str] = []
    word: list[str] = []
    quote = ""
    in_word = False
    blank_ok = False  # a quoted empty string ('') is still a word
    i = 0
    while i < len(rest):
        ch = rest[i]
        i += 1
        if not in_word:
            if ch.isspace():
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if i == len(rest):
                    continue
                word.append(ch)
                ch = rest[i]
                i += 1
            word.append(ch)
            continue
        if ch.isspace():
            if blank_ok or word:
                words.append("".join(word))
            word, in_word, blank_ok = [], False, False
            continue
        if ch in "'\"":
            quote, blank_ok = ch, True
        elif ch == escape:
            if i == len(rest):
                continue
            word.append(ch)
            ch = rest[i]
            i += 1
        word.append(ch)
    if in_word and (blank_ok or word):
        words.append("".join(word))
    return words


def parse_json_array(rest: str) -> list[str] | None:
    """The strings of ``rest`` when it is a JSON array of strings, else None.

    A valid JSON array holding anything but strings is an error, not shell form, as in docker.
    """
    rest = rest.lstrip()
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest, parse_constant=_reject_constant)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise InstructionError(NOT_STRING_ARRAY)
    return value


def _reject_constant(name: str) -> object:
    """NaN and Infinity are not JSON, though Python's json module accepts them."""
    raise ValueError(f"not JSON: {name}")
