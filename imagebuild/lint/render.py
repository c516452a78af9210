"""A report as text for people or as JSON for tools. Returns strings; never prints."""

from __future__ import annotations

import json
from typing import Any

from .model import ContextSummary, Finding, LintReport, Severity, human


def render_text(report: LintReport) -> str:
    """`FILE:LINE: severity ID message`, then `why:` and `fix:` lines; the context summary; a count."""
    lines: list[str] = []
    for finding in report.findings:
        lines.append(f"{finding.path}:{finding.line}: {finding.severity.label} {finding.rule.id} {finding.message}")
        lines.append(f"    why: {finding.rule.why}")
        lines.append(f"    fix: {finding.rule.fix}")
    if report.context is not None:
        lines.extend(_context_text(report.context))
    lines.append(_count(report.findings))
    return "\n".join(lines) + "\n"


def _context_text(c: ContextSummary) -> list[str]:
    out = [f"context {c.root}: {c.files} files, {human(c.size)}"]
    if c.dockerignore is not None:
        out.append(f"  {c.dockerignore} leaves out {c.ignored_files} files, {human(c.ignored_size)}")
    else:
        out.append("  no .dockerignore: the build reads every file")
    if c.biggest:
        out.append("  biggest files:")
        out.extend(f"    {human(f.size):>10}  {f.path}" for f in c.biggest)
    if c.suggestions:
        out.append("  a .dockerignore line would save:")
        out.extend(f"    {human(s.size):>10}  {s.pattern}  ({s.files} files)" for s in c.suggestions)
    if c.unreadable:
        out.append(f"  could not read: {', '.join(c.unreadable[:5])}" + (" ..." if len(c.unreadable) > 5 else ""))
    return out


def _count(findings: list[Finding]) -> str:
    if not findings:
        return "no findings"
    parts = []
    for severity in sorted(Severity, reverse=True):
        n = sum(1 for f in findings if f.severity == severity)
        if n:
            parts.append(f"{n} {severity.label}{'s' if n > 1 and severity != Severity.INFO else ''}")
    total = len(findings)
    return f"{total} finding{'s' if total > 1 else ''}: {', '.join(parts)}"


def finding_dict(finding: Finding) -> dict[str, Any]:
    return {
        "id": finding.rule.id,
        "severity": finding.severity.label,
        "file": finding.path,
        "line": finding.line,
        "title": finding.rule.title,
        "message": finding.message,
        "why": finding.rule.why,
        "fix": finding.rule.fix,
    }


def context_dict(c: ContextSummary) -> dict[str, Any]:
    return {
        "root": c.root,
        "files": c.files,
        "bytes": c.size,
        "dockerignore": c.dockerignore,
        "ignored_files": c.ignored_files,
        "ignored_bytes": c.ignored_size,
        "biggest": [{"path": f.path, "bytes": f.size} for f in c.biggest],
        "suggestions": [{"pattern": s.pattern, "files": s.files, "bytes": s.size} for s in c.suggestions],
        "unreadable": list(c.unreadable),
    }


def render_json(report: LintReport) -> str:
    """One JSON object: `dockerfile`, `findings` (id, severity, file, line, title, message, why, fix), `context`."""
    doc: dict[str, Any] = {
        "dockerfile": report.dockerfile,
        "findings": [finding_dict(f) for f in report.findings],
        "context": context_dict(report.context) if report.context is not None else None,
    }
    return json.dumps(doc, indent=2) + "\n"
