"""lint(): parse the Dockerfile (turning parse errors into findings), run the rules, scan the context,
apply inline ignores."""

from __future__ import annotations

from dataclasses import dataclass

from imagebuild.dockerfile import Dockerfile, DockerfileError, parse

from . import checks, contextrules, contextscan, suppress
from .model import Finding, LintReport, Severity
from .rules import RULES

_FROM_FIRST = ("the first instruction must be FROM", "no FROM instruction")
_BAD_PORT = ("invalid containerPort", "invalid proto:", "invalid range specified for port")
MAX_RECOVERIES = 100


@dataclass(frozen=True)
class _Parsed:
    dockerfile: Dockerfile | None
    findings: list[Finding]


def lint(dockerfile_path: str, context_dir: str | None, *, text: str | None = None) -> LintReport:
    """Lint the Dockerfile at ``dockerfile_path`` (or ``text``, named by that path), and ``context_dir`` if given.

    Raises OSError when the Dockerfile cannot be read and NotADirectoryError when the context is not a directory.
    """
    if text is None:
        with open(dockerfile_path, encoding="utf-8", errors="replace") as file:
            text = file.read()
    text = text.removeprefix("\ufeff")
    parsed = _parse(text, dockerfile_path)
    findings = list(parsed.findings)
    summary = None
    if parsed.dockerfile is not None:
        findings += checks.check(parsed.dockerfile)
    if context_dir is not None:
        result = contextscan.scan(context_dir, dockerfile_path)
        needed = contextrules.needed_paths(parsed.dockerfile) if parsed.dockerfile is not None else []
        summary = contextscan.summarize(result, needed)
        if parsed.dockerfile is not None:
            findings += contextrules.check_context(parsed.dockerfile, result, summary)
    findings = suppress.apply(findings, text, dockerfile_path)
    findings.sort(key=lambda f: (f.path != dockerfile_path, f.path, f.line, f.rule.id, f.message))
    return LintReport(dockerfile=dockerfile_path, findings=findings, context=summary)


def failing(report: LintReport, threshold: Severity) -> bool:
    """Whether a finding is at or above ``threshold`` (the exit status of `lint --fail-on`)."""
    return any(finding.severity >= threshold for finding in report.findings)


def _parse(text: str, path: str) -> _Parsed:
    """Parse ``text``; an instruction before FROM (IB001) or a bad EXPOSE port (IB013) becomes a finding and
    the instruction is blanked out, so the rest of the file is still linted. Any other parse error is IB000
    and ends the rules that need the parsed file."""
    lines = text.split("\n")
    findings: list[Finding] = []
    for _ in range(MAX_RECOVERIES):
        try:
            return _Parsed(parse("\n".join(lines), path), findings)
        except DockerfileError as err:
            if any(marker in err.message for marker in _FROM_FIRST):
                rule_id = "IB001"
            elif any(marker in err.message for marker in _BAD_PORT):
                rule_id = "IB013"
            else:
                if not (findings and err.message == "file with no instructions"):
                    findings.append(Finding(RULES["IB000"], path, err.line, err.message))
                return _Parsed(None, findings)
            findings.append(Finding(RULES[rule_id], path, err.line, err.message))
            if "no FROM instruction" in err.message or not _blank_instruction(lines, err.line):
                return _Parsed(None, findings)
    return _Parsed(None, findings)


def _blank_instruction(lines: list[str], line: int) -> bool:
    """Empty the instruction starting on ``line`` (1-based) and its continuation lines, keeping the numbering."""
    index = line - 1
    if not 0 <= index < len(lines) or not lines[index].strip():
        return False
    escape = "`" if _escape_is_backtick(lines) else "\\"
    while index < len(lines):
        current = lines[index].rstrip()
        lines[index] = ""
        index += 1
        if not current.endswith(escape):
            break
        while index < len(lines) and (not lines[index].strip() or lines[index].lstrip().startswith("#")):
            index += 1
    return True


def _escape_is_backtick(lines: list[str]) -> bool:
    for text in lines:
        stripped = text.strip().replace(" ", "").lower()
        if stripped == "#escape=`":
            return True
        if not stripped.startswith("#"):
            return False
    return False
