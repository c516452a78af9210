"""Each lint rule: Dockerfiles that trigger it and Dockerfiles that must not."""

from __future__ import annotations

import pytest

from imagebuild.lint import ALL_RULES, RULES, Severity, lint

TAIL = 'USER 1000\nCMD ["app"]\n'  # a final stage that satisfies IB012 and IB015


def ids(text: str) -> list[str]:
    return [f.rule.id for f in lint("Dockerfile", None, text=text).findings]


def where(text: str, rule: str) -> list[int]:
    return [f.line for f in lint("Dockerfile", None, text=text).findings if f.rule.id == rule]


# (rule, a Dockerfile that triggers it, one that does not)
CASES = [
    ("IB000", "FROM debian:12\nRUNN make\n" + TAIL, "FROM debian:12\nRUN make\n" + TAIL),
    ("IB001", "RUN echo hi\nFROM debian:12\n" + TAIL, "ARG V=12\nFROM debian:$V\n" + TAIL),
    ("IB001", "ENV A=1\nFROM debian:12\n" + TAIL, "# comment\n\nFROM debian:12\n" + TAIL),
    ("IB002", "FROM debian\n" + TAIL, "FROM debian:12\n" + TAIL),
    ("IB002", "FROM debian:latest\n" + TAIL, "FROM scratch\n" + TAIL),
    ("IB002", "FROM registry:5000/team/app\n" + TAIL, "FROM registry:5000/team/app:1.2\n" + TAIL),
    ("IB002", "ARG BASE=debian\nFROM $BASE\n" + TAIL, "FROM debian@sha256:" + "a" * 64 + "\n" + TAIL),
    ("IB002", "FROM alpine\n" + TAIL, "ARG BASE\nFROM $BASE\n" + TAIL),  # only the build knows $BASE
    (
        "IB002",
        "FROM golang AS build\nFROM build\n" + TAIL,
        "FROM golang:1.22 AS build\nFROM build\n" + TAIL,  # a stage name is not an image
    ),
    (
        "IB003",
        "FROM debian:12\nRUN apt-get update && apt-get install -y curl\n" + TAIL,
        "FROM debian:12\nRUN apt-get update && apt-get install -y curl && rm -rf /var/lib/apt/lists/*\n" + TAIL,
    ),
    (
        "IB003",
        "FROM debian:12\nRUN apt-get update\n" + TAIL,
        "FROM debian:12\nRUN --mount=type=cache,target=/var/lib/apt apt-get update && apt-get install -y x\n" + TAIL,
    ),
    (
        "IB003",
        "FROM debian:12\nRUN <<EOF\nset -e\napt-get update\napt-get -y install curl\nEOF\n" + TAIL,
        "FROM debian:12\nRUN <<EOF\napt-get update\napt-get -y install curl\nrm -rf /var/lib/apt/lists/*\nEOF\n" + TAIL,
    ),
    (
        "IB003",
        "FROM alpine:3.19\nRUN apk add curl\n" + TAIL,
        "FROM alpine:3.19\nRUN apk add --no-cache curl\n" + TAIL,
    ),
    (
        "IB003",
        "FROM fedora:40\nRUN dnf install -y gcc\n" + TAIL,
        "FROM fedora:40\nRUN dnf install -y gcc && dnf clean all\n" + TAIL,
    ),
    (
        "IB003",
        "FROM debian:12\nRUN apt-get update && apt-get install -y gcc\n" + TAIL,
        # a builder stage's layers never ship: only what it copies over does
        "FROM debian:12 AS build\nRUN apt-get update && apt-get install -y gcc\n"
        "FROM debian:12\nCOPY --from=build /out /out\n" + TAIL,
    ),
    (
        "IB004",
        "FROM debian:12\nRUN apt-get update && apt-get -y upgrade && rm -rf /var/lib/apt/lists/*\n" + TAIL,
        "FROM debian:12\nRUN echo upgrade\n" + TAIL,
    ),
    ("IB004", "FROM alpine:3.19\nRUN apk upgrade --no-cache\n" + TAIL, "FROM alpine:3.19\nRUN apk info\n" + TAIL),
    (
        "IB005",
        "FROM debian:12\nRUN cd /src && make\n" + TAIL,
        "FROM debian:12\nWORKDIR /src\nRUN make\n" + TAIL,
    ),
    (
        "IB005",
        "FROM debian:12\nRUN make -C x; cd /; ls\n" + TAIL,
        "FROM debian:12\nRUN echo 'cd /src' > notes && abcd x\n" + TAIL,  # cd only as a command counts
    ),
    ("IB006", "FROM debian:12\nWORKDIR src\n" + TAIL, "FROM debian:12\nWORKDIR /src\n" + TAIL),
    ("IB006", 'FROM debian:12\nWORKDIR "app"\n' + TAIL, "FROM debian:12\nWORKDIR $HOME/src\n" + TAIL),
    (
        "IB007",
        "FROM debian:12\nADD app.py /app/\n" + TAIL,
        "FROM debian:12\nADD bundle.tar.gz /app/\n" + TAIL,
    ),
    (
        "IB007",
        "FROM debian:12\nADD ./src /app/src\n" + TAIL,
        "FROM debian:12\nADD https://example.com/tool /usr/local/bin/tool\n" + TAIL,
    ),
    (
        "IB008",
        "FROM python:3.12\nCOPY . /app\nRUN pip install -r /app/requirements.txt\n" + TAIL,
        "FROM python:3.12\nCOPY requirements.txt /app/\nRUN pip install -r /app/requirements.txt\nCOPY . /app\n" + TAIL,
    ),
    (
        "IB008",
        "FROM node:20\nWORKDIR /app\nCOPY ./ ./\nRUN npm ci\n" + TAIL,
        "FROM node:20\nWORKDIR /app\nCOPY . .\nRUN sh setup.sh\n" + TAIL,  # no dependency install after it
    ),
    (
        "IB009",
        "FROM debian:12\nRUN echo a\nRUN echo b\n" + TAIL,
        "FROM debian:12\nRUN echo a && echo b\n" + TAIL,
    ),
    (
        "IB009",
        "FROM debian:12\nRUN echo a\n# between\n\nRUN echo b\n" + TAIL,
        "FROM debian:12\nRUN echo a\nENV X=1\nRUN echo b\n" + TAIL,
    ),
    (
        "IB009",
        "FROM debian:12\nRUN echo a\nRUN echo b\n" + TAIL,
        'FROM debian:12\nRUN ["/bin/busybox", "--install"]\nRUN echo b\n' + TAIL,  # exec form: maybe no shell
    ),
    ("IB010", "FROM debian:12\nENV DB_PASSWORD=hunter2\n" + TAIL, "FROM debian:12\nENV DB_HOST=db\n" + TAIL),
    ("IB010", "FROM debian:12\nARG GITHUB_TOKEN\n" + TAIL, "FROM debian:12\nARG VERSION\n" + TAIL),
    ("IB010", "FROM debian:12\nENV AWS_SECRET_ACCESS_KEY=x\n" + TAIL, "FROM python:3.12\nENV GPG_KEY=A035C8C\n" + TAIL),
    (
        "IB010",
        "FROM debian:12\nENV API_KEY=abc\n" + TAIL,
        "FROM debian:12\nENV DB_PASSWORD_FILE=/run/secrets/db TOKENIZERS_PARALLELISM=false\n" + TAIL,
    ),
    ("IB011", 'FROM debian:12\nUSER 1000\nCMD ["a"]\nCMD ["b"]\n', "FROM debian:12\n" + TAIL),
    (
        "IB011",
        'FROM debian:12\nUSER 1000\nENTRYPOINT ["a"]\nENTRYPOINT ["b"]\n',
        'FROM debian:12 AS one\nCMD ["a"]\nFROM debian:12\n' + TAIL,  # one CMD per stage is fine
    ),
    ("IB012", "FROM debian:12\nUSER 1000\nCMD python app.py\n", "FROM debian:12\n" + TAIL),
    (
        "IB012",
        "FROM debian:12\nUSER 1000\nENTRYPOINT /app/run\n",
        'FROM debian:12\nUSER 1000\nENTRYPOINT ["/app/run"]\n',
    ),
    ("IB013", "FROM debian:12\nEXPOSE 70000\n" + TAIL, "FROM debian:12\nEXPOSE 5000 53/udp 8000-8010\n" + TAIL),
    ("IB013", "FROM debian:12\nEXPOSE 0\n" + TAIL, "FROM debian:12\nEXPOSE $PORT\n" + TAIL),
    ("IB013", "FROM debian:12\nEXPOSE 80/http\n" + TAIL, "FROM debian:12\nEXPOSE 80/tcp\n" + TAIL),
    ("IB013", "FROM debian:12\nEXPOSE 8080:80\n" + TAIL, "FROM debian:12\nEXPOSE 80\n" + TAIL),
    ("IB014", "FROM debian:12\nRUN sudo make install\n" + TAIL, "FROM debian:12\nRUN make install\n" + TAIL),
    (
        "IB014",
        "FROM debian:12\nRUN make && sudo -E make install\n" + TAIL,
        "FROM debian:12\nRUN echo sudo\n" + TAIL,
    ),
    ("IB015", 'FROM debian:12\nCMD ["app"]\n', "FROM debian:12\n" + TAIL),
    ("IB015", 'FROM debian:12\nUSER root\nCMD ["app"]\n', 'FROM debian:12\nUSER app\nCMD ["app"]\n'),
    (
        "IB015",
        'FROM debian:12\nUSER app\nRUN make\nUSER 0:0\nCMD ["app"]\n',
        'FROM debian:12\nUSER root\nRUN make\nUSER app:app\nCMD ["app"]\n',
    ),
    (
        "IB015",
        'FROM debian:12 AS base\nUSER app\nFROM debian:12\nCMD ["app"]\n',  # only the final stage counts
        'FROM debian:12 AS base\nUSER app\nFROM base\nCMD ["app"]\n',  # ... with what it is built FROM
    ),
]


@pytest.mark.parametrize(("rule", "bad", "good"), CASES)
def test_rule_triggers_and_stays_quiet(rule: str, bad: str, good: str) -> None:
    assert rule in ids(bad)
    assert rule not in ids(good)


def test_every_rule_is_tested_and_explained() -> None:
    tested = {rule for rule, _, _ in CASES} | {"IB016", "IB017", "IB018"}  # those three: test_lint_context.py
    assert tested == set(RULES)
    assert [r.id for r in ALL_RULES] == sorted(RULES)
    for rule in ALL_RULES:
        assert rule.title and rule.why and rule.fix
        assert isinstance(rule.severity, Severity)


def test_the_good_dockerfiles_are_clean() -> None:
    """The tutorial's example, done right, has nothing to say."""
    text = (
        "FROM python:3.9-slim\n"
        "WORKDIR /app\n"
        "COPY requirements.txt .\n"
        "RUN pip install --no-cache-dir -r requirements.txt\n"
        "COPY . /app\n"
        "EXPOSE 5000\n"
        "USER 1000:1000\n"
        'CMD ["python", "app.py"]\n'
    )
    assert ids(text) == []


def test_the_tutorial_example_as_written_busts_its_cache_and_runs_as_root() -> None:
    text = (
        "FROM python:3.9-slim\nWORKDIR /app\nCOPY . /app\nRUN pip install --no-cache-dir -r requirements.txt\n"
        'EXPOSE 5000\nCMD ["python", "app.py"]\n'
    )
    assert ids(text) == ["IB015", "IB008"]  # sorted by line: FROM (1), then COPY (3)
    assert where(text, "IB008") == [3]


def test_findings_point_at_the_instruction_start() -> None:
    text = "FROM debian:12\n\nRUN apt-get update \\\n    && apt-get install -y curl\nRUN true\n" + TAIL
    assert where(text, "IB003") == [3]
    assert where(text, "IB009") == [5]


def test_every_later_cmd_is_reported_against_the_first() -> None:
    report = lint("Dockerfile", None, text='FROM debian:12\nUSER 1\nCMD ["a"]\nCMD ["b"]\nCMD ["c"]\n')
    found = [f for f in report.findings if f.rule.id == "IB011"]
    assert [f.line for f in found] == [4, 5]
    assert "line 3" in found[0].message and "line 4" in found[1].message


def test_instructions_before_from_are_each_reported_and_the_rest_still_linted() -> None:
    text = "ARG X=1\nRUN echo a \\\n  && echo b\nENV Y=2\nFROM debian\n" + TAIL
    report = lint("Dockerfile", None, text=text)
    assert [(f.rule.id, f.line) for f in report.findings] == [("IB001", 2), ("IB001", 4), ("IB002", 5)]


def test_a_file_without_from_is_ib001() -> None:
    assert ids("ARG A=1\n") == ["IB001"]
    assert ids("RUN echo hi\n") == ["IB001"]


def test_a_bad_port_does_not_hide_the_other_findings() -> None:
    report = lint("Dockerfile", None, text="FROM debian\nEXPOSE 99999\n" + TAIL)
    assert [(f.rule.id, f.line) for f in report.findings] == [("IB002", 1), ("IB013", 2)]


def test_a_dockerfile_that_does_not_parse_is_one_finding_not_a_crash() -> None:
    for text in ("FROM debian:12\nRUNN x\n", "", "FROM debian:12\nRUN <<EOF\necho\n", "FROM a AS 1x\n"):
        report = lint("Dockerfile", None, text=text)
        assert [f.rule.id for f in report.findings] == ["IB000"]


def test_builder_stages_are_checked_for_everything_but_image_size() -> None:
    text = (
        "FROM golang AS build\nRUN apt-get update && apt-get -y upgrade\nRUN cd /src && go build\nRUN true\n"
        "FROM debian:12\nCOPY --from=build /out /out\n" + TAIL
    )
    assert sorted(ids(text)) == ["IB002", "IB004", "IB005"]  # no IB003 or IB009 for a stage that does not ship
