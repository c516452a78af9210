"""What lint reports: severities, rules, findings, the context summary and the whole report."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


def human(size: int) -> str:
    """Bytes for people: 999 B, 1.5 kB, 12.3 MB (powers of 1000)."""
    value = float(size)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


class Severity(enum.IntEnum):
    """How much a finding matters; `--fail-on` compares against this order."""

    STYLE = 0
    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        """``error``, ``warning``, ``info`` or ``style`` (any case). Raises ValueError otherwise."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in sorted(cls, reverse=True))
            raise ValueError(f"unknown severity {text!r}: use one of {names}") from None


@dataclass(frozen=True)
class Rule:
    """A lint rule: its id (IB001...), severity, a title, why it matters and how to fix it."""

    id: str
    severity: Severity
    title: str
    why: str
    fix: str


@dataclass(frozen=True)
class Finding:
    """One place where a rule is broken: ``path:line`` and what exactly is wrong there."""

    rule: Rule
    path: str
    line: int
    message: str

    @property
    def severity(self) -> Severity:
        return self.rule.severity


@dataclass(frozen=True)
class FileSize:
    path: str
    size: int


@dataclass(frozen=True)
class Suggestion:
    """A usual suspect still in the context: a .dockerignore pattern and what it would leave out."""

    pattern: str
    files: int
    size: int


@dataclass(frozen=True)
class ContextSummary:
    """What a build would read from the context.

    ``files``/``size`` count what the build sees (after .dockerignore), ``ignored_*`` what the
    .dockerignore leaves out (its saving), ``suggestions`` what the usual suspects would still save.
    """

    root: str
    files: int
    size: int
    biggest: tuple[FileSize, ...]
    dockerignore: str | None
    ignored_files: int
    ignored_size: int
    suggestions: tuple[Suggestion, ...]
    unreadable: tuple[str, ...] = ()


@dataclass(frozen=True)
class LintReport:
    """The findings (sorted by file, line, id) and, when a context was given, its summary."""

    dockerfile: str
    findings: list[Finding] = field(default_factory=list)
    context: ContextSummary | None = None
