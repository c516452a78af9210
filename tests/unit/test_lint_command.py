"""`imagebuild lint` as a user runs it: arguments, text and JSON reports, exit statuses, inline ignores."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from imagebuild.lint import RULES, Severity, command, failing, lint, render_json, render_text

TAIL = 'USER 1000\nCMD ["app"]\n'


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = command(argv, out, err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM debian:12\nRUN echo a\nRUN echo b\n" + TAIL)  # one info finding
    (tmp_path / "app.py").write_text("print()\n")
    return tmp_path


def test_text_report_names_file_line_severity_id_why_and_fix(project: Path) -> None:
    status, out, err = run([str(project)])
    dockerfile = str(project / "Dockerfile")
    assert status == 0 and err == ""  # info is below the default threshold (warning)
    lines = out.splitlines()
    assert lines[0] == f"{dockerfile}:3: info IB009 this RUN follows the RUN on line 2: one RUN makes one layer"
    assert lines[1] == f"    why: {RULES['IB009'].why}"
    assert lines[2] == f"    fix: {RULES['IB009'].fix}"
    assert f"context {project}: 2 files" in out
    assert lines[-1] == "1 finding: 1 info"


@pytest.mark.parametrize(("threshold", "status"), [("error", 0), ("warning", 0), ("info", 1), ("style", 1)])
def test_exit_status_follows_fail_on(project: Path, threshold: str, status: int) -> None:
    assert run(["--fail-on", threshold, str(project)])[0] == status
    assert run([f"--fail-on={threshold.upper()}", str(project)])[0] == status


def test_an_error_fails_by_default(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM debian:12\nENV API_TOKEN=x\n" + TAIL)
    assert run([str(tmp_path)])[0] == 1
    assert run(["--fail-on", "error", str(tmp_path)])[0] == 1


def test_json_report(project: Path) -> None:
    status, out, _ = run(["--format", "json", "-f", str(project / "Dockerfile"), str(project)])
    doc = json.loads(out)
    assert status == 0
    assert doc["dockerfile"] == str(project / "Dockerfile")
    (finding,) = doc["findings"]
    assert finding == {
        "id": "IB009",
        "severity": "info",
        "file": str(project / "Dockerfile"),
        "line": 3,
        "title": RULES["IB009"].title,
        "message": "this RUN follows the RUN on line 2: one RUN makes one layer",
        "why": RULES["IB009"].why,
        "fix": RULES["IB009"].fix,
    }
    assert doc["context"]["files"] == 2 and doc["context"]["dockerignore"] is None


def test_file_without_context_lints_only_the_file(project: Path) -> None:
    status, out, _ = run(["-f", str(project / "Dockerfile"), "--format=json"])
    assert status == 0 and json.loads(out)["context"] is None
    assert run([f"-f{project / 'Dockerfile'}"])[0] == 0


def test_default_context_is_the_current_directory(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    status, out, _ = run([])
    assert status == 0 and out.startswith("Dockerfile:3: info IB009")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--format", "xml", "."], "--format must be text or json"),
        (["--fail-on", "fatal", "."], "unknown severity 'fatal'"),
        (["--bogus"], "unknown option --bogus"),
        (["-f"], "-f needs a value"),
        (["a", "b"], "one CONTEXT at most"),
    ],
)
def test_usage_errors_are_one_line_and_status_2(argv: list[str], needle: str) -> None:
    status, out, err = run(argv)
    assert status == 2 and out == ""
    assert err.startswith("imagebuild: error: lint: ") and needle in err and err.count("\n") == 1


def test_missing_inputs_are_one_line_and_status_2(tmp_path: Path) -> None:
    status, _, err = run([str(tmp_path)])  # no Dockerfile in it
    assert status == 2 and "cannot read" in err and "Dockerfile" in err and err.count("\n") == 1
    status, _, err = run([str(tmp_path / "nope")])
    assert status == 2 and "is not a directory" in err


def test_help_and_rule_list() -> None:
    status, out, _ = run(["--help"])
    assert status == 0 and out.startswith("usage: imagebuild lint") and "imagebuild-lint ignore=" in out
    status, out, _ = run(["--rules"])
    assert status == 0 and len(out.splitlines()) == len(RULES) and "IB003  warning" in out


def test_inline_ignore_silences_the_named_rules_for_the_next_instruction_only() -> None:
    text = (
        "FROM debian:12\nRUN echo a\n# imagebuild-lint ignore=IB009\nRUN echo b\nRUN echo c\n"
        "# imagebuild-lint ignore=IB005, IB014\n\n# why: the vendor script needs it\nRUN sudo cd /x\n"
        "# imagebuild-lint ignore=IB003\nRUN sudo true\n" + TAIL
    )
    report = lint("Dockerfile", None, text=text)
    assert [(f.rule.id, f.line) for f in report.findings] == [("IB009", 5), ("IB009", 9), ("IB009", 11), ("IB014", 11)]


def test_ignore_all_and_ignores_above_from() -> None:
    text = "# imagebuild-lint ignore=IB002 IB015\nFROM debian\n# imagebuild-lint ignore=all\nCMD run\n"
    assert lint("Dockerfile", None, text=text).findings == []


def test_failing_compares_severities() -> None:
    report = lint("Dockerfile", None, text="FROM debian:12\nWORKDIR app\n" + TAIL)  # one warning
    assert [f.severity for f in report.findings] == [Severity.WARNING]
    assert failing(report, Severity.WARNING) and failing(report, Severity.STYLE)
    assert not failing(report, Severity.ERROR)


def test_renderers_of_a_clean_report() -> None:
    report = lint("Dockerfile", None, text="FROM debian:12\n" + TAIL)
    assert render_text(report) == "no findings\n"
    assert json.loads(render_json(report)) == {"dockerfile": "Dockerfile", "findings": [], "context": None}


def test_the_bundled_example_passes_its_own_lint() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "app"
    status, out, _ = run(["--fail-on", "style", str(example)])
    assert status == 0, out
