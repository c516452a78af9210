"""Each lint rule: a Dockerfile that triggers it and one that does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagebuild.lint import RULES, Severity, failing, lint, render_json, render_text

GOOD_TAIL = 'USER 1000\nCMD ["app"]\n'

CASES = [
    ("IB001", "RUN echo hi\nFROM debian:12\n", "ARG V=12\nFROM debian:$V\n" + GOOD_TAIL),
    ("IB002", "FROM debian\n" + GOOD_TAIL, "FROM debian:12\n" + GOOD_TAIL),
    ("IB002", "FROM debian:latest\n" + GOOD_TAIL, "FROM scratch\n" + GOOD_TAIL),
    (
        "IB003",
        "FROM debian:12\nRUN apt-get update && apt-get install -y curl\n" + GOOD_TAIL,
        "FROM debian:12\nRUN apt-get update && apt-get install -y curl && rm -rf /var/lib/apt/lists/*\n" + GOOD_TAIL,
    ),
    (
        "IB003",
        "FROM alpine:3.19\nRUN apk add curl\n" + GOOD_TAIL,
        "FROM alpine:3.19\nRUN apk add --no-cache curl\n" + GOOD_TAIL,
    ),
    (
        "IB004",
        "FROM debian:12\nRUN apt-get upgrade -y\n" + GOOD_TAIL,
        "FROM debian:12\nRUN echo up-to-date\n" + GOOD_TAIL,
    ),
    (
        "IB005",
        "FROM debian:12\nRUN cd /src && make\n" + GOOD_TAIL,
        "FROM debian:12\nWORKDIR /src\nRUN make\n" + GOOD_TAIL,
    ),
    ("IB006", "FROM debian:12\nWORKDIR src\n" + GOOD_TAIL, "FROM debian:12\nWORKDIR /src\n" + GOOD_TAIL),
    (
        "IB007",
        "FROM debian:12\nADD app.py /app/\n" + GOOD_TAIL,
        "FROM debian:12\nADD bundle.tar.gz /app/\n" + GOOD_TAIL,
    ),
    (
        "IB008",
        "FROM python:3.12\nCOPY . /app\nRUN pip install -r /app/requirements.txt\n" + GOOD_TAIL,
        "FROM python:3.12\nCOPY requirements.txt /app/\nRUN pip install -r /app/requirements.txt\nCOPY . /app\n"
        + GOOD_TAIL,
    ),
    (
        "IB009",
        "FROM debian:12\nRUN echo a\nRUN echo b\n" + GOOD_TAIL,
        "FROM debian:12\nRUN echo a && echo b\n" + GOOD_TAIL,
    ),
    ("IB010", "FROM debian:12\nENV DB_PASSWORD=hunter2\n" + GOOD_TAIL, "FROM debian:12\nENV DB_HOST=db\n" + GOOD_TAIL),
    ("IB010", "FROM debian:12\nARG API_TOKEN\n" + GOOD_TAIL, "FROM debian:12\nARG VERSION\n" + GOOD_TAIL),
    ("IB011", 'FROM debian:12\nUSER 1000\nCMD ["a"]\nCMD ["b"]\n', "FROM debian:12\n" + GOOD_TAIL),
    ("IB012", "FROM debian:12\nUSER 1000\nCMD python app.py\n", "FROM debian:12\n" + GOOD_TAIL),
    ("IB013", "FROM debian:12\nEXPOSE 70000\n" + GOOD_TAIL, "FROM debian:12\nEXPOSE 5000 53/udp\n" + GOOD_TAIL),
    ("IB014", "FROM debian:12\nRUN sudo make install\n" + GOOD_TAIL, "FROM debian:12\nRUN make install\n" + GOOD_TAIL),
    ("IB015", 'FROM debian:12\nCMD ["app"]\n', "FROM debian:12\n" + GOOD_TAIL),
    ("IB015", 'FROM debian:12\nUSER root\nCMD ["app"]\n', 'FROM debian:12\nUSER app\nCMD ["app"]\n'),
]


def ids(text: str, context: Path | None = None, tmp: Path | None = None) -> list[str]:
    return [f.rule.id for f in lint("Dockerfile", str(context) if context else None, text=text).findings]


@pytest.mark.parametrize(("rule", "bad", "good"), CASES)
def test_rule_triggers_and_stays_quiet(rule: str, bad: str, good: str) -> None:
    assert rule in ids(bad)
    assert rule not in ids(good)


def test_every_rule_has_a_case() -> None:
    covered = {rule for rule, _, _ in CASES} | {"IB000", "IB016", "IB017"}
    assert covered == set(RULES)
    assert all(r.why and r.fix and r.title for r in RULES.values())


def test_findings_name_file_and_line_and_inline_ignores_silence_them() -> None:
    text = "FROM debian:12\nRUN echo a\n# imagebuild-lint ignore=IB009\nRUN echo b\nRUN echo c\n" + GOOD_TAIL
    findings = lint("app/Dockerfile", None, text=text).findings
    assert [(f.rule.id, f.path, f.line) for f in findings] == [("IB009", "app/Dockerfile", 5)]
    assert "app/Dockerfile:5: info IB009" in render_text(lint("app/Dockerfile", None, text=text))


def test_a_dockerfile_that_does_not_parse_is_a_finding_not_a_crash() -> None:
    report = lint("Dockerfile", None, text="FROM debian:12\nRUNN x\n")
    assert [(f.rule.id, f.line) for f in report.findings] == [("IB000", 2)]


def test_severity_threshold_and_json() -> None:
    report = lint("Dockerfile", None, text="FROM debian:12\nRUN echo a\nRUN echo b\n" + GOOD_TAIL)  # info only
    assert not failing(report, Severity.WARNING) and failing(report, Severity.INFO)
    doc = json.loads(render_json(report))
    assert doc["findings"][0]["id"] == "IB009" and doc["findings"][0]["severity"] == "info"
    assert doc["findings"][0]["why"] and doc["findings"][0]["fix"]


def test_copy_of_an_ignored_source_and_the_context_summary(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("*.log\nsecrets/\n")
    (tmp_path / "app.py").write_text("print()\n")
    (tmp_path / "debug.log").write_text("x" * 1000)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "key").write_text("k")
    bad = "FROM debian:12\nCOPY secrets/key /etc/key\nCOPY app.py /app/\n" + GOOD_TAIL
    report = lint("Dockerfile", str(tmp_path), text=bad)
    assert [(f.rule.id, f.line) for f in report.findings] == [("IB016", 2)]
    assert report.context is not None and report.context.ignored_size == 1001
    assert report.context.files == 2  # .dockerignore and app.py
    assert "IB016" not in ids("FROM debian:12\nCOPY app.py /app/\n" + GOOD_TAIL, tmp_path)


def test_large_context_without_dockerignore_says_what_it_would_save(tmp_path: Path) -> None:
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "blob").write_bytes(b"\0" * 11_000_000)
    (tmp_path / "app.js").write_text("x")
    report = lint("Dockerfile", str(tmp_path), text="FROM node:20\n" + GOOD_TAIL)
    found = [f for f in report.findings if f.rule.id == "IB017"]
    assert found and "node_modules (11000000 bytes)" in found[0].message
    assert report.context is not None and report.context.biggest[0] == ("node_modules/blob", 11_000_000)
    (tmp_path / ".dockerignore").write_text("node_modules\n")
    assert "IB017" not in ids("FROM node:20\n" + GOOD_TAIL, tmp_path)
