"""Inline ignores: `# imagebuild-lint ignore=IB009,IB012` silences those rules for the next instruction.

The comment may be anywhere in the run of comment and blank lines right above the instruction. `ignore=all`
silences every rule there. Findings about the whole file (a large context, IB017) sit on the first FROM, so
a comment above it silences them.
"""

from __future__ import annotations

import re

from .model import Finding

_DIRECTIVE = re.compile(r"^\s*#\s*imagebuild-lint\s+ignore\s*=\s*([A-Za-z0-9_,\s]+?)\s*$")
ALL = "ALL"


def ignored_ids(lines: list[str], line: int) -> set[str]:
    """The rule ids silenced for the instruction starting on (1-based) ``line``."""
    found: set[str] = set()
    index = line - 2
    while index >= 0:
        text = lines[index].strip()
        if text and not text.startswith("#"):
            break
        match = _DIRECTIVE.match(text)
        if match:
            found |= {part.upper() for part in re.split(r"[\s,]+", match.group(1)) if part}
        index -= 1
    return found


def apply(findings: list[Finding], text: str, path: str) -> list[Finding]:
    """``findings`` without those an ignore comment in ``text`` (the file at ``path``) silences."""
    lines = text.splitlines()
    kept: list[Finding] = []
    for finding in findings:
        if finding.path == path and 0 < finding.line <= len(lines) + 1:
            silenced = ignored_ids(lines, finding.line)
            if finding.rule.id in silenced or ALL in silenced:
                continue
        kept.append(finding)
    return kept
