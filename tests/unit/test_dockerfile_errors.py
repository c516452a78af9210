"""Every parse error names the right line and says what is wrong."""

from __future__ import annotations

import pytest

from imagebuild.dockerfile import DockerfileError, parse


def error_of(text: str) -> DockerfileError:
    with pytest.raises(DockerfileError) as info:
        parse(text, path="build/Dockerfile")
    return info.value


def test_str_is_path_line_message() -> None:
    err = DockerfileError("a/Dockerfile", 7, "boom")
    assert str(err) == "a/Dockerfile:7: boom"
    assert (err.path, err.line, err.message) == ("a/Dockerfile", 7, "boom")


def test_unknown_instruction_suggests_the_closest_keyword() -> None:
    err = error_of("FROM alpine\n\nRUNN echo hi\n")
    assert str(err) == "build/Dockerfile:3: unknown instruction 'RUNN' (did you mean RUN?)"


@pytest.mark.parametrize(("word", "guess"), [("FORM", "FROM"), ("cpoy", "COPY"), ("WORKDIRR", "WORKDIR")])
def test_suggestions(word: str, guess: str) -> None:
    assert f"(did you mean {guess}?)" in error_of(f"FROM a\n{word} x\n").message


def test_unknown_instruction_far_from_any_keyword_has_no_suggestion() -> None:
    assert error_of("FROM a\nFROBNICATE x\n").message == "unknown instruction 'FROBNICATE'"


def test_first_instruction_must_be_from() -> None:
    err = error_of("# comment\nARG V=1\nRUN echo\nFROM alpine\n")
    assert err.line == 3
    assert "first instruction must be FROM" in err.message
    assert "RUN" in err.message


def test_file_with_only_args_has_no_stage() -> None:
    err = error_of("ARG A\nARG B\n")
    assert err.line == 1
    assert "no FROM" in err.message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "# escape=`\n\n   \n"])
def test_empty_file(text: str) -> None:
    assert "no instructions" in error_of(text).message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("RUN", "RUN requires at least one argument"),
        ("CMD", "CMD requires at least one argument"),
        ("WORKDIR", "WORKDIR requires at least one argument"),
        ("USER  ", "USER requires at least one argument"),
        ("ENV", "ENV requires at least one argument"),
        ("ARG", "ARG requires at least one argument"),
        ("EXPOSE", "EXPOSE requires at least one argument"),
        ("VOLUME", "VOLUME requires at least one argument"),
        ("ONBUILD", "ONBUILD requires at least one argument"),
        ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
        ("COPY", "COPY requires at least two arguments"),
        ("ADD onlysource", "ADD requires at least two arguments, but only one was provided"),
        ("COPY --from=x", "COPY requires at least two arguments"),
        ("RUN --network=none", "RUN requires at least one argument"),
        ("ENV KEY", "ENV must have two arguments"),
        ("LABEL a=1 b", "can't find = in 'b'"),
        ("ENV =x", "ENV names can not be blank"),
        ("ARG =x", "ARG names can not be blank"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK CMD []", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK NONE now", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK RUN x", "Unknown type 'RUN' in HEALTHCHECK (try CMD)"),
        ('VOLUME ["/a", " "]', "VOLUME specified can not be an empty string"),
        ("EXPOSE 80/tcpx", "invalid proto: tcpx"),
        ("EXPOSE http", "invalid containerPort: http"),
        ("EXPOSE 70000", "invalid containerPort: 70000"),
        ("EXPOSE 90-80", "invalid range"),
        ('CMD ["a", 1]', "arrays must be comprised of strings only"),
        ("FROM", "FROM requires either one or three arguments"),
        ("FROM a b", "FROM requires either one or three arguments"),
        ("FROM a AS 1st", "invalid name for build stage: '1st'"),
        ("FROM a AS my/stage", "invalid name for build stage"),
    ],
)
def test_argument_errors(line: str, message: str) -> None:
    err = error_of(f"FROM alpine\n# a comment\n{line}\n")
    assert err.line == 3
    assert message in err.message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("SHELL /bin/bash -c", "SHELL requires the arguments to be in JSON form"),
        ('SHELL ["/bin/bash", "-c"', "SHELL requires the arguments to be in JSON form"),
        ("SHELL []", "SHELL requires at least one argument"),
    ],
)
def test_shell_must_be_json(line: str, message: str) -> None:
    err = error_of(f"FROM alpine\n{line}\n")
    assert err.line == 2
    assert message in err.message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("COPY --form=build a b", "unknown flag --form for COPY (did you mean --from?)"),
        ("COPY --frobnicate a b", "unknown flag --frobnicate for COPY (allowed: --from,"),
        ("ADD --from=build a b", "unknown flag --from for ADD"),
        ("FROM --platfrom=linux/amd64 alpine", "(did you mean --platform?)"),
        ("WORKDIR --x=1 /app", "WORKDIR takes no flags (got --x)"),
        ("CMD --help", "CMD takes no flags (got --help)"),
        ("ONBUILD --x RUN a", "ONBUILD takes no flags"),
        ("COPY --from a b", "missing a value on flag: --from"),
        ("COPY --from=a --from=b a b", "duplicate flag specified: --from"),
        ("COPY --link=maybe a b", "expecting boolean value for flag --link, not: maybe"),
        ("RUN --network=bridge x", "unsupported value for --network: 'bridge'"),
        ("HEALTHCHECK --interval=5 CMD true", 'invalid duration "5"'),
        ("HEALTHCHECK --timeout=10us CMD true", "--timeout cannot be less than 1ms"),
        ("HEALTHCHECK --retries=-1 CMD true", "--retries cannot be negative"),
        ("HEALTHCHECK --retries=many CMD true", "--retries must be an integer"),
    ],
)
def test_flag_errors(line: str, message: str) -> None:
    err = error_of(f"FROM alpine\n{line}\n")
    assert err.line == 2
    assert message in err.message


def test_error_line_is_where_a_continued_instruction_starts() -> None:
    err = error_of("FROM alpine\nRUN echo a && \\\n    echo b\nCOPY \\\n  onlyone\n")
    assert err.line == 4


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("ONBUILD FROM alpine", "FROM isn't allowed as an ONBUILD trigger"),
        ("ONBUILD maintainer me", "MAINTAINER isn't allowed as an ONBUILD trigger"),
        ("ONBUILD RUNN x", "unknown instruction 'RUNN' (did you mean RUN?)"),
        ("ONBUILD COPY onlyone", "COPY requires at least two arguments"),
    ],
)
def test_onbuild_errors(line: str, message: str) -> None:
    err = error_of(f"FROM alpine\n{line}\n")
    assert err.line == 2
    assert message in err.message


def test_duplicate_stage_names_case_insensitive() -> None:
    err = error_of("FROM alpine AS build\nRUN x\nFROM debian as BUILD\n")
    assert err.line == 3
    assert "duplicate stage name 'build'" in err.message
    assert "line 1" in err.message


def test_copy_from_a_later_stage() -> None:
    err = error_of("FROM alpine AS a\nCOPY --from=B /x /y\nFROM alpine AS b\n")
    assert err.line == 2
    assert "comes later" in err.message


def test_copy_from_the_current_stage() -> None:
    err = error_of("FROM alpine AS a\nRUN x\nCOPY --from=a /x /y\n")
    assert err.line == 3
    assert "circular" in err.message


def test_copy_from_current_or_later_stage_index() -> None:
    assert "circular" in error_of("FROM alpine\nFROM alpine\nCOPY --from=1 /x /y\n").message
    assert "comes later" in error_of("FROM alpine\nCOPY --from=1 /x /y\nFROM alpine\n").message
    assert "no stage 5" in error_of("FROM alpine\nFROM alpine\nCOPY --from=5 /x /y\n").message


def test_copy_from_an_image_or_variable_is_not_a_stage_error() -> None:
    df = parse(
        "ARG SRC=a\nFROM alpine AS a\nFROM alpine\nCOPY --from=a /x /y\nCOPY --from=busybox /bin/sh /sh\n"
        "COPY --from=$SRC /x /z\nCOPY --from=0 /x /w\n"
    )
    assert [i.flags["from"] for i in df.stages[1].instructions] == ["a", "busybox", "$SRC", "0"]


def test_unterminated_quote_in_env() -> None:
    # docker keeps the unbalanced quote in the raw value; expansion reports it later
    df = parse('FROM a\nENV A="x\n')
    assert df.instructions[1].pairs[0].value == '"x'
