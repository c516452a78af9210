"""Whole files: the tutorial example, multi-stage builds, stage lookup, parse_file."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagebuild.dockerfile import DockerfileError, KeyValue, parse, parse_file

TUTORIAL = """\
# comment
FROM python:3.9-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -r requirements.txt
EXPOSE 5000
CMD ["python", "app.py"]
"""

MULTI_STAGE = """\
# syntax=docker/dockerfile:1
ARG GO_VERSION=1.22
ARG APP=server

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS Build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \\
    go mod download
COPY . .
RUN CGO_ENABLED=0 go build -o /out/${APP} ./cmd/${APP}

FROM build AS test
RUN go test ./...

FROM gcr.io/distroless/static
ARG APP
ENV APP=${APP} PATH=/usr/local/bin:$PATH
COPY --from=build --chmod=0755 /out/${APP} /usr/local/bin/app
USER 65532:65532
HEALTHCHECK --interval=10s CMD ["/usr/local/bin/app", "-health"]
ENTRYPOINT ["/usr/local/bin/app"]
"""


def test_tutorial_example() -> None:
    df = parse(TUTORIAL)
    assert df.directives == {}
    assert df.meta_args == []
    assert [(i.cmd, i.line) for i in df.instructions] == [
        ("FROM", 2),
        ("WORKDIR", 3),
        ("COPY", 4),
        ("RUN", 5),
        ("EXPOSE", 6),
        ("CMD", 7),
    ]
    (stage,) = df.stages
    assert (stage.name, stage.base, stage.index, stage.line, stage.platform) == (None, "python:3.9-slim", 0, 2, None)
    assert [i.cmd for i in stage.instructions] == ["WORKDIR", "COPY", "RUN", "EXPOSE", "CMD"]
    workdir, copy, run, expose, cmd = stage.instructions
    assert workdir.args == "/app"
    assert copy.args == [".", "/app"]
    assert run.args == "pip install --no-cache-dir -r requirements.txt"
    assert run.flags == {}  # --no-cache-dir belongs to pip, not to RUN
    assert expose.args == ["5000"]
    assert (cmd.args, cmd.json_form) == (["python", "app.py"], True)


def test_multi_stage_example() -> None:
    df = parse(MULTI_STAGE)
    assert df.directives == {"syntax": "docker/dockerfile:1"}
    assert [p for a in df.meta_args for p in a.pairs] == [
        KeyValue(key="GO_VERSION", value="1.22"),
        KeyValue(key="APP", value="server"),
    ]
    assert [(s.index, s.name, s.base, s.line) for s in df.stages] == [
        (0, "build", "golang:${GO_VERSION}", 5),
        (1, "test", "build", 13),
        (2, None, "gcr.io/distroless/static", 16),
    ]
    build, test, final = df.stages
    assert build.platform == "$BUILDPLATFORM"
    assert [i.cmd for i in build.instructions] == ["WORKDIR", "COPY", "RUN", "COPY", "RUN"]
    mount_run = build.instructions[2]
    assert mount_run.flags == {"mount": "type=cache,target=/go/pkg/mod"}
    assert mount_run.args == "go mod download"
    assert (mount_run.line, mount_run.end_line) == (8, 9)
    assert [i.cmd for i in test.instructions] == ["RUN"]
    copy = final.instructions[2]
    assert copy.flags == {"from": "build", "chmod": "0755"}
    health = final.instructions[4]
    assert health.args == ["CMD", "/usr/local/bin/app", "-health"]
    assert health.flags == {"interval": "10s"}
    assert len(df.instructions) == 2 + (1 + 5) + (1 + 1) + (1 + 6)


def test_stage_lookup_by_name_and_index() -> None:
    df = parse(MULTI_STAGE)
    assert df.stage("build").index == 0
    assert df.stage("BUILD").index == 0
    assert df.stage("Test").index == 1
    assert df.stage(2).base == "gcr.io/distroless/static"
    assert df.stage("2").index == 2
    with pytest.raises(KeyError):
        df.stage("nope")
    with pytest.raises(IndexError):
        df.stage(3)
    with pytest.raises(IndexError):
        df.stage(-1)


def test_instructions_of_all_stages_are_in_file_order() -> None:
    df = parse(MULTI_STAGE)
    lines = [i.line for i in df.instructions]
    assert lines == sorted(lines)
    assert df.instructions[2] is df.stages[0].from_instruction


def test_parse_file(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(TUTORIAL, encoding="utf-8")
    df = parse_file(path)
    assert df.path == str(path)
    assert len(df.instructions) == 6


def test_parse_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "Containerfile"
    path.write_text("FROM a\nBOGUS x\n", encoding="utf-8")
    with pytest.raises(DockerfileError) as info:
        parse_file(path)
    assert str(info.value).startswith(f"{path}:2: unknown instruction 'BOGUS'")
