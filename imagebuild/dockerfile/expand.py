"""Variable substitution in Dockerfile words, as docker's shell-word lexer does it.

Docker expands variables itself (not through a shell) in the arguments of ADD, COPY, ENV,
EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR, in ONBUILD triggers when they run
(with one of those instructions), in ARG defaults, in the ``--chown``, ``--chmod``, ``--from``
and ``--platform`` flags (FROM ``--platform`` and FROM's image with the meta ARGs only) and in
the body of a heredoc whose delimiter was not quoted. RUN, CMD and ENTRYPOINT are left to the
shell. Choosing when to expand, and with which environment, is the builder's concern; this
module only knows how.

Supported: ``$VAR``, ``${VAR}``, ``${VAR:-word}``, ``${VAR-word}``, ``${VAR:+word}``,
``${VAR+word}``, ``${VAR:?message}``, ``${VAR?message}``, ``${VAR#pat}``, ``${VAR##pat}``,
``${VAR%pat}``, ``${VAR%%pat}``, ``${VAR/pat/repl}``, ``${VAR//pat/repl}``, with nesting in the
word (``${A:-${B}}``). Single quotes keep everything literal, double quotes keep spaces but still
expand, and the escape character (``\\`` or the ``# escape=`` backtick) makes the next character
literal. Quotes and escapes are removed from the result.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ExpansionError
from .model import DEFAULT_ESCAPE

_SPECIAL_PARAMS = frozenset("@*#?-$!0")


def expand(word: str, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> str:
    """``word`` with its variables substituted and its quotes and escapes removed.

    Whitespace is kept: ``ENV A="x y"`` and ``WORKDIR /my dir`` stay one value.
    Raises :class:`ExpansionError` on bad syntax or a failed ``${VAR:?message}``.
    """
    return Lexer(escape=escape).process(word, env)[0]


def expand_words(text: str, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> list[str]:
    """``text`` expanded and split into words at unquoted whitespace.

    Whitespace inside a variable's value splits too (``EXPOSE $PORTS`` with ``PORTS="80 443"``
    gives two words); whitespace inside quotes does not. A word that is only ``""`` vanishes,
    as in docker.
    """
    return Lexer(escape=escape).process(text, env)[1]


@dataclass
class _Words:
    """Collects the words of ProcessWords: unquoted whitespace separates them."""

    word: str = ""
    words: list[str] = field(default_factory=list)
    in_word: bool = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def finish(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


@dataclass(frozen=True)
class Lexer:
    """The lexer's options; :meth:`process` runs it over one text.

    ``raw_quotes`` and ``raw_escapes`` keep quote and escape characters in the output, and
    ``skip_unset`` leaves references to unset variables as written: the parser uses those to
    find heredoc delimiters without changing the line.
    """

    escape: str = DEFAULT_ESCAPE
    raw_quotes: bool = False
    raw_escapes: bool = False
    skip_unset: bool = False

    def process(self, text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
        """The expanded text and its words."""
        scan = _Scan(self, text, env)
        try:
            return scan.until(None, self.raw_escapes)
        except ExpansionError as err:
            raise ExpansionError(f'failed to process "{text}": {err.message}') from None


class _Scan:
    """One pass of the lexer over a text."""

    def __init__(self, lexer: Lexer, text: str, env: Mapping[str, str]) -> None:
        self.lx = lexer
        self.text = text
        self.pos = 0
        self.env = env

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1 if ch else 0
        return ch

    def until(self, stop: str | None, raw_escapes: bool) -> tuple[str, list[str]]:
        """Process up to ``stop`` (consumed) or the end of the text when ``stop`` is None."""
        out: list[str] = []
        words = _Words()
        while (ch := self.peek()) != "":
            if stop is not None and ch == stop:
                self.next()
                return "".join(out), words.finish()
            if ch == "$":
                piece = self.dollar()
                words.add_string(piece)  # an unquoted value splits at its whitespace
                out.append(piece)
                continue
            if ch in "'\"":
                piece = self.single_quote() if ch == "'" else self.double_quote()
                words.add_raw(piece)
                out.append(piece)
                continue
            self.next()
            if ch == self.lx.escape:
                if raw_escapes:
                    words.add_raw(ch)
                    out.append(ch)
                ch = self.next()
                if ch == "":
                    break
                words.add_raw(ch)
            else:
                words.add_char(ch)
            out.append(ch)
        if stop is not None:
            raise ExpansionError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out), words.finish()

    def single_quote(self) -> str:
        """Everything up to the next ``'`` is literal; nothing can be escaped inside."""
        quote = self.next()
        end = self.text.find("'", self.pos)
        if end < 0:
            raise ExpansionError("unexpected end of statement while looking for matching single-quote")
        body = self.text[self.pos : end]
        self.pos = end + 1
        return quote + body + quote if self.lx.raw_quotes else body

    def double_quote(self) -> str:
        """Literal up to the next ``"`` except ``$`` expansions and escaped ``"``, ``$``, escape."""
        quote = self.next()
        out = [quote] if self.lx.raw_quotes else []
        while True:
            ch = self.peek()
            if ch == "":
                raise ExpansionError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.lx.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.next()
            if ch == self.lx.escape:
                if self.lx.raw_escapes:
                    out.append(ch)
                following = self.peek()
                if following == "":
                    continue
                if following in ('"', "$", self.lx.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        """A variable name: letters, digits, ``_``; or digits only; or one special parameter."""
        start = self.pos
        ch = self.peek()
        if ch.isdecimal():
            while self.peek().isdecimal():
                self.next()
            return self.text[start : self.pos]
        if ch in _SPECIAL_PARAMS and ch != "":
            return self.next()
        while (ch := self.peek()) != "" and (ch.isalnum() or ch == "_"):
            self.next()
        return self.text[start : self.pos]

    def lookup(self, name: str) -> str | None:
        return self.env.get(name)

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value = self.lookup(name)
            if value is None and self.lx.skip_unset:
                return "$" + name
            return value or ""
        self.next()
        first = self.peek()
        if first == "":
            raise ExpansionError("syntax error: missing '}'")
        if first in "{}:":
            raise ExpansionError("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if op == "":
            raise ExpansionError("syntax error: missing '}'")
        if op == "}":
            value = self.lookup(name)
            if value is None and self.lx.skip_unset:
                return "${" + name + "}"
            return value or ""
        if op == "/":
            return self.replace(name)
        return self.modifier(name, op)

    def modifier_word(self, raw_escapes: bool) -> str:
        try:
            return self.until("}", raw_escapes)[0]
        except ExpansionError:
            if self.peek() == "":
                raise ExpansionError("syntax error: missing '}'") from None
            raise

    def modifier(self, name: str, op: str) -> str:
        """``${name<op>word}`` for the operators ``-``, ``+``, ``?``, ``#``, ``%`` and their ``:`` forms."""
        colon = op == ":"
        if colon:
            op = self.next()
        spelled = (":" if colon else "") + op
        if op not in ("-", "+", "?", "#", "%") or (colon and op in "#%"):
            raise ExpansionError(f"unsupported modifier ({spelled}) in substitution")
        word = self.modifier_word(raw_escapes=op in "#%")
        value = self.lookup(name)
        if value is None and self.lx.skip_unset:
            return "${" + name + spelled + word + "}"
        unset = value is None or (colon and value == "")
        if op == "-":
            return word if unset else value or ""
        if op == "+":
            return "" if unset else word
        if op == "?":
            if value is None:
                raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
            if colon and value == "":
                raise ExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        return _trim(value or "", word, op, self.lx.escape)

    def replace(self, name: str) -> str:
        """``${name/pattern/replacement}`` (first match) and ``${name//pattern/replacement}`` (all)."""
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        try:
            pattern = self.until("/", True)[0]
        except ExpansionError:
            if self.peek() == "":
                raise ExpansionError("syntax error: missing '/' in ${}") from None
            raise
        replacement = self.modifier_word(raw_escapes=True)
        value = self.lookup(name)
        if value is None and self.lx.skip_unset:
            return "${" + name + ("//" if replace_all else "/") + pattern + "/" + replacement + "}"
        regex = re.compile(_pattern_regex(pattern, self.lx.escape), re.DOTALL)
        return regex.sub(lambda _m: replacement, value or "", count=0 if replace_all else 1)


def _trim(value: str, word: str, op: str, escape: str) -> str:
    """Remove the shortest (``#``, ``%``) or longest (``##``, ``%%``) match of a pattern."""
    greedy = word.startswith(op)
    if greedy:
        word = word[1:]
    regex = re.compile(_pattern_regex(word, escape), re.DOTALL)
    cuts = range(len(value) + 1)
    if op == "#":
        for cut in reversed(cuts) if greedy else cuts:
            if regex.fullmatch(value[:cut]):
                return value[cut:]
    else:
        for cut in cuts if greedy else reversed(cuts):
            if regex.fullmatch(value[cut:]):
                return value[:cut]
    return value


def _pattern_regex(pattern: str, escape: str) -> str:
    """A shell glob (``*``, ``?``, ``[...]``, escaped characters) as a Python regex."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == escape and i < len(pattern):
            out.append(re.escape(pattern[i]))
            i += 1
        elif ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[" and (end := pattern.find("]", i + 1)) != -1:
            body = pattern[i:end]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(ch))
    return "".join(out)
