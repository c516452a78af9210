"""The rules that need the build context: IB016 (COPY of an excluded source), IB017 (large context without
.dockerignore) and IB018 (malformed .dockerignore)."""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from imagebuild.dockerfile import Dockerfile, Instruction

from .contextscan import ContextScan
from .ignorefile import DockerIgnore, compile_pattern, normalize_path
from .model import ContextSummary, Finding, human
from .rules import RULES

LARGE_CONTEXT = 10_000_000  # bytes; "over 10 MB"
_GLOB = frozenset("*?[")


def context_sources(df: Dockerfile) -> list[tuple[Instruction, str]]:
    """Each COPY/ADD source that names a context path, with its instruction (no --from, URL, heredoc or $)."""
    out: list[tuple[Instruction, str]] = []
    for stage in df.stages:
        for ins in stage.instructions:
            if ins.cmd not in ("COPY", "ADD") or "from" in ins.flags or not isinstance(ins.args, list):
                continue
            heredocs = {f"<<{h.name}" for h in ins.heredocs} | {f"<<-{h.name}" for h in ins.heredocs}
            for source in ins.args[:-1]:
                if source in heredocs or "$" in source or "://" in source or source.startswith("git@"):
                    continue
                rel = normalize_path(source)
                if rel in ("", ".") or rel == ".." or rel.startswith("../"):
                    continue
                out.append((ins, rel))
    return out


def needed_paths(df: Dockerfile) -> list[str]:
    """The literal context paths the Dockerfile copies by name."""
    return [rel for _, rel in context_sources(df) if not _GLOB & set(rel)]


def check_context(df: Dockerfile, result: ContextScan, summary: ContextSummary) -> list[Finding]:
    out: list[Finding] = []
    if result.ignore_error is not None and result.ignore_path is not None:
        err = result.ignore_error
        out.append(Finding(RULES["IB018"], result.ignore_path, max(1, err.line), err.message))
    if result.ignore is not None:
        out.extend(_excluded_sources(df, result, result.ignore))
    elif result.ignore_path is None and summary.size > LARGE_CONTEXT:
        out.append(_large_context(df, summary))
    return out


def _excluded_sources(df: Dockerfile, result: ContextScan, ignore: DockerIgnore) -> list[Finding]:
    out: list[Finding] = []
    for ins, rel in context_sources(df):
        if _GLOB & set(rel):
            matcher = compile_pattern(rel, False, 0)
            named = [f for f in result.files if _named_by(matcher.matches, f.path)]
            if named and all(f.excluded for f in named):
                message = f"every file '{rel}' matches is excluded by .dockerignore: the COPY finds nothing"
                out.append(Finding(RULES["IB016"], df.path, ins.line, message))
            continue
        pattern = ignore.matching_pattern(rel)
        if pattern is not None:
            where = f"line {pattern.line}, '{'!' if pattern.exception else ''}{pattern.text}'"
            message = f"'{rel}' is excluded by .dockerignore ({where})"
            out.append(Finding(RULES["IB016"], df.path, ins.line, message))
            continue
        below = [f for f in result.files if f.path.startswith(rel + "/")]
        if below and all(f.excluded for f in below):
            message = f"everything under '{rel}' is excluded by .dockerignore: the COPY takes an empty directory"
            out.append(Finding(RULES["IB016"], df.path, ins.line, message))
    return out


def _named_by(matches: Callable[[str], bool], path: str) -> bool:
    parts = path.split("/")
    return any(matches(posixpath.join(*parts[:n])) for n in range(1, len(parts) + 1))


def _large_context(df: Dockerfile, summary: ContextSummary) -> Finding:
    first = df.stages[0].from_instruction
    line = first.line if first is not None else 1
    message = f"the context is {human(summary.size)} in {summary.files} files and there is no .dockerignore"
    if summary.suggestions:
        saves = ", ".join(f"{s.pattern} ({human(s.size)})" for s in summary.suggestions[:4])
        message += f"; it could leave out {saves}"
    return Finding(RULES["IB017"], df.path, line, message)
