"""What a build would read from its context: sizes, the biggest files, what .dockerignore saves or would save.

Walks the context without following symlinks (a symlink counts as itself, never as its target) and never
leaves it. Directories it cannot read are listed, not fatal.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from .ignorefile import DockerIgnore, IgnoreFileError
from .model import ContextSummary, FileSize, Suggestion

BIGGEST = 5

# .dockerignore lines that are almost never needed in an image, in the order they are suggested.
USUAL_SUSPECTS = (
    ".git",
    ".hg",
    ".svn",
    "**/node_modules",
    "**/__pycache__",
    "**/*.pyc",
    ".venv",
    "venv",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "target",
    "dist",
    "build",
    "coverage",
    ".coverage",
    "**/*.log",
    "**/.DS_Store",
    ".idea",
    ".vscode",
)


@dataclass(frozen=True)
class ContextFile:
    path: str  # relative, `/`-separated
    size: int  # bytes of a regular file, 0 for anything else
    excluded: bool  # by the .dockerignore


@dataclass(frozen=True)
class ContextScan:
    """The walk's result: every non-directory entry, and the .dockerignore used (if any)."""

    root: str
    files: tuple[ContextFile, ...]
    ignore: DockerIgnore | None
    ignore_path: str | None
    ignore_error: IgnoreFileError | None
    unreadable: tuple[str, ...]


def find_dockerignore(context_dir: str, dockerfile_path: str | None) -> str | None:
    """`<Dockerfile>.dockerignore` next to the Dockerfile wins over the context's `.dockerignore`, as in docker."""
    candidates = [f"{dockerfile_path}.dockerignore"] if dockerfile_path else []
    candidates.append(os.path.join(context_dir, ".dockerignore"))
    return next((path for path in candidates if os.path.isfile(path)), None)


def scan(context_dir: str, dockerfile_path: str | None = None) -> ContextScan:
    """Walk ``context_dir``. Raises NotADirectoryError/FileNotFoundError when it is not a directory."""
    if not os.path.isdir(context_dir):
        raise NotADirectoryError(f"build context '{context_dir}' is not a directory")
    ignore_path = find_dockerignore(context_dir, dockerfile_path)
    ignore: DockerIgnore | None = None
    error: IgnoreFileError | None = None
    if ignore_path is not None:
        try:
            ignore = DockerIgnore.from_file(ignore_path)
        except IgnoreFileError as err:
            error = err
        except OSError as err:
            error = IgnoreFileError(0, f"cannot read it: {err.strerror}")
    files: list[ContextFile] = []
    unreadable: list[str] = []
    _walk(context_dir, "", ignore, files, unreadable)
    return ContextScan(context_dir, tuple(files), ignore, ignore_path, error, tuple(unreadable))


def _walk(top: str, prefix: str, ignore: DockerIgnore | None, files: list[ContextFile], bad: list[str]) -> None:
    try:
        with os.scandir(os.path.join(top, prefix) if prefix else top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        bad.append(prefix.rstrip("/") or ".")
        return
    for entry in entries:
        rel = prefix + entry.name
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            bad.append(rel)
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(top, rel + "/", ignore, files, bad)
            continue
        size = st.st_size if stat.S_ISREG(st.st_mode) else 0
        files.append(ContextFile(rel, size, ignore is not None and ignore.excluded(rel)))


def summarize(result: ContextScan, needed: Iterable[str] = ()) -> ContextSummary:
    """The summary of a scan. ``needed`` are context paths the Dockerfile copies by name: a suggestion that
    would exclude one of them is not made."""
    sent = [f for f in result.files if not f.excluded]
    left_out = [f for f in result.files if f.excluded]
    biggest = sorted(sent, key=lambda f: (-f.size, f.path))[:BIGGEST]
    return ContextSummary(
        root=result.root,
        files=len(sent),
        size=sum(f.size for f in sent),
        biggest=tuple(FileSize(f.path, f.size) for f in biggest if f.size),
        dockerignore=result.ignore_path,
        ignored_files=len(left_out),
        ignored_size=sum(f.size for f in left_out),
        suggestions=tuple(_suggestions(sent, list(needed), result.ignore)),
        unreadable=result.unreadable,
    )


def _suggestions(sent: list[ContextFile], needed: list[str], ignore: DockerIgnore | None) -> list[Suggestion]:
    """Usual suspects that still send files, unless the Dockerfile copies them by name or the .dockerignore
    already has the pattern (and brings part of it back on purpose)."""
    out: list[Suggestion] = []
    present = {pattern.text for pattern in ignore.patterns} if ignore is not None else set()
    for pattern in USUAL_SUSPECTS:
        matcher = DockerIgnore.parse(pattern)
        if matcher.patterns[0].text in present or any(matcher.excluded(path) for path in needed):
            continue
        hits = [f for f in sent if matcher.excluded(f.path)]
        if hits:
            out.append(Suggestion(pattern, len(hits), sum(f.size for f in hits)))
    return out
