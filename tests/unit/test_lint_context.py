"""Lint with a build context: COPY of excluded sources (IB016), large contexts without .dockerignore (IB017),
malformed .dockerignore (IB018), and the summary of what the build would read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagebuild.lint import LintReport, lint

TAIL = 'USER 1000\nCMD ["app"]\n'


def run(context: Path, text: str) -> LintReport:
    return lint(str(context / "Dockerfile"), str(context), text=text)


def found(report: LintReport, rule: str) -> list[tuple[str, int]]:
    return [(os.path.basename(f.path), f.line) for f in report.findings if f.rule.id == rule]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / ".dockerignore").write_text("# not for the image\n*.log\nsecrets/\ndocs\n!docs/README.md\n")
    (tmp_path / "app.py").write_text("print()\n")
    (tmp_path / "debug.log").write_text("x" * 1000)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "key").write_text("k")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.md").write_text("readme")
    (tmp_path / "docs" / "guide.md").write_text("guide")
    return tmp_path


def test_copy_of_an_excluded_file_or_directory(app: Path) -> None:
    report = run(app, "FROM debian:12\nCOPY secrets/key /etc/key\nCOPY ./debug.log /log\nCOPY app.py /app/\n" + TAIL)
    assert found(report, "IB016") == [("Dockerfile", 2), ("Dockerfile", 3)]
    message = next(f.message for f in report.findings if f.line == 2)
    assert "line 3" in message and "secrets" in message  # names the pattern that excludes it


def test_copy_of_what_is_sent_is_quiet(app: Path) -> None:
    text = "FROM debian:12\nCOPY app.py /app/\nCOPY docs/README.md /doc/\nCOPY . /src\nCOPY --from=x secrets/ /s\n"
    assert found(run(app, "FROM debian:12 AS x\n" + text + TAIL), "IB016") == []


def test_copy_of_a_glob_that_only_matches_excluded_files(app: Path) -> None:
    assert found(run(app, "FROM debian:12\nCOPY *.log /logs/\n" + TAIL), "IB016") == [("Dockerfile", 2)]
    assert found(run(app, "FROM debian:12\nCOPY *.py /app/\n" + TAIL), "IB016") == []
    assert found(run(app, "FROM debian:12\nCOPY docs/*.md /doc/\n" + TAIL), "IB016") == []  # README.md is kept


def test_copy_of_a_directory_whose_every_file_is_excluded(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("conf/*.local\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "a.local").write_text("a")
    assert found(run(tmp_path, "FROM debian:12\nCOPY conf /etc/app\n" + TAIL), "IB016") == [("Dockerfile", 2)]
    (tmp_path / "conf" / "a.conf").write_text("a")
    assert found(run(tmp_path, "FROM debian:12\nCOPY conf /etc/app\n" + TAIL), "IB016") == []


def test_the_summary_counts_what_is_sent_and_what_dockerignore_saves(app: Path) -> None:
    report = run(app, "FROM debian:12\nCOPY app.py /app/\n" + TAIL)
    c = report.context
    assert c is not None
    sent = {".dockerignore", "app.py", "docs/README.md"}
    assert c.files == len(sent)
    assert c.size == sum((app / p).stat().st_size for p in sent)
    assert (c.ignored_files, c.ignored_size) == (3, 1000 + 1 + len("guide"))
    assert c.dockerignore == str(app / ".dockerignore")
    assert c.biggest[0].path == ".dockerignore" and len(c.biggest) == 3


def test_a_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("app.py\n")
    (tmp_path / "app.py").write_text("x")
    (tmp_path / "Dockerfile.dockerignore").write_text("nothing-here\n")
    report = run(tmp_path, "FROM debian:12\nCOPY app.py /app/\n" + TAIL)
    assert found(report, "IB016") == []
    assert report.context is not None and report.context.dockerignore == str(tmp_path / "Dockerfile.dockerignore")


def test_symlinks_are_counted_as_themselves_and_never_followed(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"\0" * 5000)
    (tmp_path / "link").symlink_to(tmp_path / "big")
    (tmp_path / "outside").symlink_to("/")
    report = run(tmp_path, "FROM debian:12\n" + TAIL)
    assert report.context is not None
    assert (report.context.files, report.context.size) == (3, 5000)


def test_large_context_without_dockerignore_says_what_it_would_save(tmp_path: Path) -> None:
    (tmp_path / "web" / "node_modules").mkdir(parents=True)
    (tmp_path / "web" / "node_modules" / "blob").write_bytes(b"\0" * 11_000_000)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "pack").write_bytes(b"\0" * 2000)
    (tmp_path / "app.js").write_text("x")
    text = "# the app\nFROM node:20\nCOPY . /app\n" + TAIL
    report = run(tmp_path, text)
    assert found(report, "IB017") == [("Dockerfile", 2)]
    finding = next(f for f in report.findings if f.rule.id == "IB017")
    assert "11.0 MB" in finding.message and "**/node_modules" in finding.message and ".git" in finding.message
    assert report.context is not None
    assert report.context.biggest[0].path == "web/node_modules/blob"
    assert [(s.pattern, s.size) for s in report.context.suggestions] == [(".git", 2000), ("**/node_modules", 11e6)]
    (tmp_path / ".dockerignore").write_text("**/node_modules\n")
    report = run(tmp_path, text)
    assert found(report, "IB017") == []
    assert report.context is not None and report.context.ignored_size == 11_000_000


def test_small_context_without_dockerignore_is_fine(tmp_path: Path) -> None:
    (tmp_path / "app.js").write_bytes(b"\0" * 100_000)
    assert found(run(tmp_path, "FROM node:20\n" + TAIL), "IB017") == []


def test_suggestions_spare_what_the_dockerfile_copies(tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "app.whl").write_text("wheel")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "tmp.o").write_text("obj")
    report = run(tmp_path, "FROM python:3.12\nCOPY dist/app.whl /tmp/\n" + TAIL)
    assert report.context is not None
    assert [s.pattern for s in report.context.suggestions] == ["build"]


def test_a_malformed_dockerignore_is_a_finding_at_its_line(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("*.log\n!\n")
    report = run(tmp_path, "FROM debian:12\n" + TAIL)
    assert found(report, "IB018") == [(".dockerignore", 2)]
    (tmp_path / ".dockerignore").write_text("*.log\n!keep.log\n")
    assert found(run(tmp_path, "FROM debian:12\n" + TAIL), "IB018") == []


def test_context_findings_can_be_ignored_inline(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("x\n")
    (tmp_path / "x").write_text("x")
    text = "FROM debian:12\n# imagebuild-lint ignore=IB016\nCOPY x /x\n" + TAIL
    assert found(run(tmp_path, text), "IB016") == []


def test_a_context_that_is_not_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        lint("Dockerfile", str(tmp_path / "missing"), text="FROM debian:12\n" + TAIL)


def test_no_suggestion_for_a_pattern_the_dockerignore_has_and_partly_takes_back(tmp_path: Path) -> None:
    (tmp_path / "node_modules" / "keep").mkdir(parents=True)
    (tmp_path / "node_modules" / "keep" / "x.js").write_text("x")
    (tmp_path / "node_modules" / "drop.js").write_text("y")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "m.pyc").write_text("z")
    (tmp_path / ".dockerignore").write_text("**/node_modules\n!node_modules/keep\n")
    report = run(tmp_path, "FROM node:20\n" + TAIL)
    assert report.context is not None
    assert report.context.files == 3 and report.context.ignored_files == 1  # .dockerignore, keep/x.js, m.pyc
    assert [s.pattern for s in report.context.suggestions] == ["**/__pycache__", "**/*.pyc"]
