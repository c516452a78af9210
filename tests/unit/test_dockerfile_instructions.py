"""The arguments, flags and forms of each instruction."""

from __future__ import annotations

import pytest

from imagebuild.dockerfile import Instruction, KeyValue, parse


def one(line: str, prefix: str = "FROM alpine\n") -> Instruction:
    """The instruction on ``line``, parsed in a file that starts with a FROM."""
    return parse(prefix + line + "\n").instructions[-1]


# RUN, CMD, ENTRYPOINT: exec form and shell form


@pytest.mark.parametrize("cmd", ["RUN", "CMD", "ENTRYPOINT"])
def test_exec_form_is_a_list_of_strings(cmd: str) -> None:
    instr = one(f'{cmd} ["/bin/echo", "a b", "c\\"d"]')
    assert instr.json_form is True
    assert instr.args == ["/bin/echo", "a b", 'c"d']


@pytest.mark.parametrize("cmd", ["RUN", "CMD", "ENTRYPOINT"])
def test_shell_form_is_the_command_text(cmd: str) -> None:
    instr = one(f"{cmd}   echo $HOME  'a  b' ")
    assert instr.json_form is False
    assert instr.args == "echo $HOME  'a  b'"


def test_invalid_json_falls_back_to_shell_form() -> None:
    instr = one("CMD [\"python\", 'app.py']")
    assert instr.json_form is False
    assert instr.args == "[\"python\", 'app.py']"


def test_json_with_trailing_text_is_shell_form() -> None:
    instr = one('CMD ["a"] b')
    assert (instr.json_form, instr.args) == (False, '["a"] b')


def test_empty_json_array_is_exec_form() -> None:
    instr = one("ENTRYPOINT []")
    assert (instr.json_form, instr.args) == (True, [])


def test_json_spanning_continuation_lines() -> None:
    instr = one('CMD ["python", \\\n     "app.py"]')
    assert instr.args == ["python", "app.py"]
    assert instr.end_line == 3


def test_run_flags() -> None:
    instr = one("RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=tok --network=none pip install x")
    assert instr.args == "pip install x"
    assert instr.flags == {"mount": "type=secret,id=tok", "network": "none"}
    assert instr.flag_values("mount") == ["type=cache,target=/root/.cache", "type=secret,id=tok"]
    assert instr.flag_list[0] == ("mount", "type=cache,target=/root/.cache")


def test_flag_values_may_be_quoted() -> None:
    instr = one("COPY --chown=\"app user\" --from='build' a b")
    assert instr.flags == {"chown": "app user", "from": "build"}


def test_double_dash_ends_flags() -> None:
    instr = one("RUN --network=host -- --not-a-flag")
    assert instr.flags == {"network": "host"}
    assert instr.args == "--not-a-flag"


# SHELL


def test_shell_takes_a_json_array() -> None:
    instr = one('SHELL ["powershell", "-command"]')
    assert (instr.args, instr.json_form) == (["powershell", "-command"], True)


# COPY and ADD


def test_copy_shell_form_splits_at_whitespace() -> None:
    instr = one("COPY  a.txt\tb.txt   /dest/")
    assert (instr.args, instr.json_form) == (["a.txt", "b.txt", "/dest/"], False)


def test_copy_json_form_keeps_spaces() -> None:
    instr = one('COPY ["my file", "/my dir/"]')
    assert (instr.args, instr.json_form) == (["my file", "/my dir/"], True)


def test_copy_flags() -> None:
    instr = one("COPY --from=build --chown=1000:1000 --chmod=0755 --link /out /app")
    assert instr.flags == {"from": "build", "chown": "1000:1000", "chmod": "0755", "link": "true"}
    assert instr.args == ["/out", "/app"]


def test_boolean_flag_accepts_explicit_values() -> None:
    assert one("COPY --link=false a b").flags == {"link": "false"}
    assert one("COPY --link=TRUE a b").flags == {"link": "true"}


def test_add_flags() -> None:
    instr = one("ADD --checksum=sha256:abc --keep-git-dir https://x/y.git /src")
    assert instr.flags == {"checksum": "sha256:abc", "keep-git-dir": "true"}
    assert instr.args == ["https://x/y.git", "/src"]


def test_copy_exclude_repeats() -> None:
    instr = one("COPY --exclude=*.pyc --exclude=.git . /app")
    assert instr.flag_values("exclude") == ["*.pyc", ".git"]


# VOLUME, EXPOSE, WORKDIR, USER, STOPSIGNAL, MAINTAINER


def test_volume_forms() -> None:
    assert one("VOLUME /data /logs").args == ["/data", "/logs"]
    instr = one('VOLUME ["/data", "/my logs"]')
    assert (instr.args, instr.json_form) == (["/data", "/my logs"], True)


def test_expose_ports() -> None:
    assert one("EXPOSE 80 443/tcp 53/udp 8000-8010").args == ["80", "443/tcp", "53/udp", "8000-8010"]


def test_expose_with_variable_is_not_checked_yet() -> None:
    assert one("EXPOSE $PORT ${OTHER}/udp").args == ["$PORT", "${OTHER}/udp"]


@pytest.mark.parametrize("cmd", ["WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"])
def test_single_text_argument(cmd: str) -> None:
    instr = one(f"{cmd} some value  here ")
    assert instr.args == "some value  here"


# ENV, LABEL, ARG


def test_env_key_value_pairs_keep_raw_values() -> None:
    instr = one("ENV A=1 B=\"v 2\" C='$HOME' D=a\\ b E=")
    assert instr.pairs == [
        KeyValue(key="A", value="1"),
        KeyValue(key="B", value='"v 2"'),
        KeyValue(key="C", value="'$HOME'"),
        KeyValue(key="D", value="a\\ b"),
        KeyValue(key="E", value=""),
    ]
    assert instr.args == ["A=1", 'B="v 2"', "C='$HOME'", "D=a\\ b", "E="]


def test_env_legacy_form_takes_the_rest_as_value() -> None:
    instr = one("ENV MY_VAR  value with   spaces")
    assert instr.pairs == [KeyValue(key="MY_VAR", value="value with   spaces")]


def test_env_value_may_contain_equals() -> None:
    assert one("ENV OPTS=--a=b").pairs == [KeyValue(key="OPTS", value="--a=b")]


def test_label_forms() -> None:
    instr = one('LABEL org.opencontainers.image.title="My app" version=1.0')
    assert instr.pairs == [
        KeyValue(key="org.opencontainers.image.title", value='"My app"'),
        KeyValue(key="version", value="1.0"),
    ]
    assert one("LABEL maintainer someone@example.com").pairs == [
        KeyValue(key="maintainer", value="someone@example.com")
    ]


def test_env_over_continuation_lines() -> None:
    instr = one("ENV A=1 \\\n    B=2")
    assert [p.key for p in instr.pairs] == ["A", "B"]


def test_arg_with_and_without_default() -> None:
    instr = one('ARG VERSION=1.2 NAME TITLE="a b" EMPTY=')
    assert instr.pairs == [
        KeyValue(key="VERSION", value="1.2"),
        KeyValue(key="NAME", value=None),
        KeyValue(key="TITLE", value='"a b"'),
        KeyValue(key="EMPTY", value=""),
    ]


# FROM


def test_from_forms() -> None:
    df = parse("FROM --platform=linux/arm64 alpine:3.19 as Builder\nFROM builder\n")
    first, second = df.stages
    assert (first.name, first.base, first.platform) == ("builder", "alpine:3.19", "linux/arm64")
    assert first.from_instruction is not None
    assert first.from_instruction.args == ["alpine:3.19", "as", "Builder"]
    assert (second.name, second.base, second.platform) == (None, "builder", None)


def test_from_with_variable_base() -> None:
    df = parse("ARG BASE=alpine\nFROM ${BASE}:latest AS x\n")
    assert df.stages[0].base == "${BASE}:latest"
    assert [a.cmd for a in df.meta_args] == ["ARG"]


# HEALTHCHECK


def test_healthcheck_none() -> None:
    instr = one("HEALTHCHECK NONE")
    assert instr.args == ["NONE"]


def test_healthcheck_shell_form_with_flags() -> None:
    instr = one(
        "HEALTHCHECK --interval=30s --timeout=3s --start-period=1m30s --retries=3 "
        "CMD curl -f http://localhost/ || exit 1"
    )
    assert instr.args == ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]
    assert instr.json_form is False
    assert instr.flags == {"interval": "30s", "timeout": "3s", "start-period": "1m30s", "retries": "3"}


def test_healthcheck_exec_form() -> None:
    instr = one('HEALTHCHECK cmd ["curl", "-f", "http://localhost/"]')
    assert instr.args == ["CMD", "curl", "-f", "http://localhost/"]
    assert instr.json_form is True


# ONBUILD


def test_onbuild_wraps_a_parsed_instruction() -> None:
    instr = one("ONBUILD COPY --chown=app . /src")
    assert instr.cmd == "ONBUILD"
    assert instr.args == "COPY --chown=app . /src"
    assert instr.trigger is not None
    assert instr.trigger.cmd == "COPY"
    assert instr.trigger.flags == {"chown": "app"}
    assert instr.trigger.args == [".", "/src"]
    assert instr.trigger.line == instr.line


def test_onbuild_trigger_keyword_is_case_insensitive() -> None:
    instr = one("onbuild run echo hi")
    assert instr.trigger is not None
    assert (instr.trigger.cmd, instr.trigger.args) == ("RUN", "echo hi")


def test_maintainer_is_accepted() -> None:
    assert one("MAINTAINER Jane <jane@example.com>").args == "Jane <jane@example.com>"


def test_flag_values_are_raw_for_the_builder_to_expand() -> None:
    instr = one("COPY --chown=${UID}:$GID --from=$SRC a b")
    assert instr.flags == {"chown": "${UID}:$GID", "from": "$SRC"}


def test_leading_dashes_after_the_first_argument_are_not_flags() -> None:
    instr = one("RUN pip install --upgrade pip")
    assert (instr.flags, instr.args) == ({}, "pip install --upgrade pip")
