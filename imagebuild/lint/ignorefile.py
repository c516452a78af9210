""".dockerignore: which paths of a build context a build never sees. Pure; no file access but `from_file`.

Docker's semantics (moby/patternmatcher and its ignorefile reader):

- A line whose first character is `#` is a comment; other lines are stripped of surrounding blanks, and empty
  ones are skipped. A UTF-8 byte-order mark at the start is ignored.
- `!` at the start makes the pattern an exception: it re-includes what earlier patterns excluded.
- Patterns are cleaned like paths (`./a//b/../c` is `a/c`) and are relative to the context root: a leading `/`
  is dropped.
- `*` matches any run of characters within one path component, `?` one character other than `/`, `[...]` one
  character of a class (`[^...]` negated, `a-z` ranges), `\\` makes the next character literal. `**` matches
  any number of components, none included: `**/x` is x at any depth, `a/**` everything below a.
  A pattern beginning with `**` followed by plain text is a suffix match (`**.log` matches `a/b.log`).
- A path is excluded when the pattern matches it or any of its parent directories: `build` excludes
  `build/x/y`. The last pattern that matches decides, so `!build/keep` after `build` brings back one file.
- A bare `!`, an unclosed `[` or a trailing `\\` is an error (docker refuses the context).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from imagebuild.errors import ImagebuildError

_BOM = "\ufeff"


class IgnoreFileError(ImagebuildError, ValueError):
    """A .dockerignore pattern docker would refuse: ``line`` is 1-based (0 when unknown)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(line, message)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass(frozen=True)
class Pattern:
    """One cleaned pattern: ``text`` as docker keeps it, ``exception`` for a `!` line."""

    text: str
    exception: bool
    line: int
    regex: re.Pattern[str] | None  # None for a suffix match
    suffix: str = ""

    def matches(self, path: str) -> bool:
        """Whether ``path`` itself (not its parents) matches."""
        if self.regex is not None:
            return self.regex.match(path) is not None
        if path.endswith(self.suffix):
            return True
        return self.suffix.startswith("/") and path == self.suffix[1:]


@dataclass(frozen=True)
class DockerIgnore:
    """The patterns of one .dockerignore, in order."""

    patterns: tuple[Pattern, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, text: str) -> DockerIgnore:
        """The patterns of a .dockerignore's text. Raises :class:`IgnoreFileError` for a malformed one."""
        patterns: list[Pattern] = []
        for number, raw in enumerate(text.removeprefix(_BOM).splitlines(), start=1):
            if raw.startswith("#"):
                continue
            line = raw.strip()
            if not line:
                continue
            exception = line.startswith("!")
            body = line[1:].strip() if exception else line
            if not body:
                raise IgnoreFileError(number, 'illegal exclusion pattern: "!"')
            patterns.append(compile_pattern(clean_pattern(body), exception, number))
        return cls(tuple(patterns))

    @classmethod
    def from_file(cls, path: str) -> DockerIgnore:
        """Read and parse the file at ``path`` (UTF-8; undecodable bytes never match a real name)."""
        with open(path, encoding="utf-8", errors="replace") as file:
            return cls.parse(file.read())

    @property
    def has_exceptions(self) -> bool:
        """Whether a `!` pattern may bring back something below an excluded directory."""
        return any(pattern.exception for pattern in self.patterns)

    def excluded(self, relpath: str) -> bool:
        """Whether the build leaves out ``relpath`` (relative to the context root, `/`-separated)."""
        path = normalize_path(relpath)
        if path in ("", "."):
            return False
        parents = _parents(path)
        result = False
        for pattern in self.patterns:
            if pattern.exception != result:
                continue  # cannot change the outcome: an exception when nothing is excluded, or the reverse
            if pattern.matches(path) or any(pattern.matches(parent) for parent in parents):
                result = not pattern.exception
        return result

    def matching_pattern(self, relpath: str) -> Pattern | None:
        """The pattern that decides that ``relpath`` is excluded, or None when it is not."""
        path = normalize_path(relpath)
        parents = _parents(path)
        decided: Pattern | None = None
        for pattern in self.patterns:
            if pattern.matches(path) or any(pattern.matches(parent) for parent in parents):
                decided = pattern
        return decided if decided is not None and not decided.exception else None


def normalize_path(relpath: str) -> str:
    """A context path in the form patterns are matched against: cleaned, no leading `/` or `./`."""
    path = posixpath.normpath(relpath) if relpath else ""
    return path.lstrip("/")


def clean_pattern(pattern: str) -> str:
    """Docker's cleaning: `filepath.Clean`, then a leading `/` dropped (unless the pattern is just `/`)."""
    cleaned = posixpath.normpath(pattern)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")  # posix keeps a leading //; Go does not
    if len(cleaned) > 1 and cleaned.startswith("/"):
        cleaned = cleaned[1:]
    return cleaned


def compile_pattern(text: str, exception: bool, line: int) -> Pattern:
    """The matcher for a cleaned pattern."""
    if text.startswith("**") and not any(ch in text[2:] for ch in "*?[]\\"):
        return Pattern(text, exception, line, None, text[2:])
    return Pattern(text, exception, line, re.compile(_regex(text, line), re.DOTALL))


def _regex(text: str, line: int) -> str:
    out = ["^"]
    i = 0
    while i < len(text):
        ch = text[i]
        i += 1
        if ch == "*":
            if i < len(text) and text[i] == "*":
                i += 1
                if i < len(text) and text[i] == "/":
                    i += 1
                out.append(".*" if i == len(text) else "(?:.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            klass, i = _char_class(text, i, line)
            out.append(klass)
        elif ch == "\\":
            if i == len(text):
                raise IgnoreFileError(line, f"syntax error in pattern {text!r}: trailing backslash")
            out.append(re.escape(text[i]))
            i += 1
        else:
            out.append(re.escape(ch))
    out.append(r"\Z")
    return "".join(out)


def _char_class(text: str, i: int, line: int) -> tuple[str, int]:
    """The class starting after a `[` at ``i``, as a Python regex class, and the index after its `]`."""
    parts = ["["]
    if i < len(text) and text[i] == "^":
        parts.append("^")
        i += 1
    members = 0
    while True:
        if i == len(text):
            raise IgnoreFileError(line, f"syntax error in pattern {text!r}: unclosed [")
        ch = text[i]
        i += 1
        if ch == "]" and members:
            break
        if ch == "\\":
            if i == len(text):
                raise IgnoreFileError(line, f"syntax error in pattern {text!r}: trailing backslash")
            ch = text[i]
            i += 1
        elif ch == "-" and members and i < len(text) and text[i] != "]":
            parts.append("-")
            continue
        parts.append(re.escape(ch) if ch not in "/" else "/")
        members += 1
    parts.append("]")
    klass = "".join(parts)
    try:
        re.compile(klass)
    except re.error as err:
        raise IgnoreFileError(line, f"syntax error in pattern {text!r}: {err.msg}") from None
    return klass, i


def _parents(path: str) -> list[str]:
    """`a/b/c` -> [`a`, `a/b`]."""
    parts = path.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts))]
