"""Reading lines: comments, blank lines, continuations, parser directives, escape character."""

from __future__ import annotations

import pytest

from imagebuild.dockerfile import DockerfileError, parse


def test_comments_and_blank_lines_are_skipped_and_lines_are_counted() -> None:
    df = parse("# top\n\nFROM alpine\n   # indented comment\n\n\tRUN echo hi\n")
    assert [(i.cmd, i.line) for i in df.instructions] == [("FROM", 3), ("RUN", 6)]


def test_hash_inside_an_instruction_is_not_a_comment() -> None:
    df = parse("FROM alpine\nRUN echo a # not a comment\n")
    assert df.instructions[1].args == "echo a # not a comment"


def test_keywords_are_case_insensitive() -> None:
    df = parse("from alpine AS Build\nrun echo hi\nCopy a b\n")
    assert [i.cmd for i in df.instructions] == ["FROM", "RUN", "COPY"]
    assert df.stages[0].name == "build"


def test_continuation_joins_lines_and_keeps_the_start_line() -> None:
    text = "FROM alpine\nRUN apk add \\\n    curl \\\n    git\nUSER nobody\n"
    run = parse(text).instructions[1]
    assert run.args == "apk add     curl     git"
    assert run.original == "RUN apk add     curl     git"
    assert (run.line, run.end_line) == (2, 4)
    assert parse(text).instructions[2].line == 5


def test_blanks_after_the_continuation_character_still_continue() -> None:
    run = parse("FROM alpine\nRUN echo a \\   \n  b\n").instructions[1]
    assert run.args == "echo a   b"


def test_escaped_escape_at_line_end_does_not_continue() -> None:
    df = parse("FROM alpine\nRUN echo a\\\\\nUSER x\n")
    assert df.instructions[1].args == "echo a\\\\"
    assert df.instructions[2].cmd == "USER"


def test_comments_and_empty_lines_inside_a_continuation_are_skipped() -> None:
    text = "FROM alpine\nRUN a \\\n# a comment\n    # indented\n\n   \n  && b\nUSER x\n"
    df = parse(text)
    run = df.instructions[1]
    assert run.args == "a   && b"
    assert (run.line, run.end_line) == (2, 7)
    assert df.instructions[2].line == 8


def test_continuation_at_end_of_file_ends_the_instruction() -> None:
    run = parse("FROM alpine\nRUN echo a \\\n").instructions[1]
    assert run.args == "echo a"


def test_crlf_line_endings_and_bom() -> None:
    df = parse("\ufeffFROM alpine\r\nRUN a \\\r\n b\r\n")
    assert df.instructions[0].args == ["alpine"]
    assert df.instructions[1].args == "a  b"


def test_escape_directive_backtick() -> None:
    text = "# escape=`\nFROM windows\nCOPY testfile.txt c:\\\nRUN dir c:\\ `\n  /b\n"
    df = parse(text)
    assert df.directives == {"escape": "`"}
    assert df.escape == "`"
    assert df.instructions[1].args == ["testfile.txt", "c:\\"]
    assert df.instructions[2].args == "dir c:\\   /b"
    assert (df.instructions[2].line, df.instructions[2].end_line) == (4, 5)


def test_backslash_does_not_continue_with_backtick_escape() -> None:
    df = parse("# escape=`\nFROM a\nRUN x \\\nUSER y\n")
    assert df.instructions[1].args == "x \\"
    assert df.instructions[2].cmd == "USER"


def test_directive_keys_are_case_insensitive_and_syntax_is_kept() -> None:
    df = parse("# SYNTAX = docker/dockerfile:1\n#Escape=\\\nFROM a\n")
    assert df.directives == {"syntax": "docker/dockerfile:1", "escape": "\\"}


def test_directive_after_a_comment_is_only_a_comment() -> None:
    df = parse("# hello\n# escape=`\nFROM a\nRUN x `\n")
    assert df.directives == {}
    assert df.escape == "\\"
    assert df.instructions[1].args == "x `"


def test_directive_after_a_blank_line_or_instruction_is_a_comment() -> None:
    assert parse("\n# escape=`\nFROM a\n").directives == {}
    assert parse("FROM a\n# escape=`\n").directives == {}


def test_unknown_directive_ends_the_directives() -> None:
    df = parse("# foo=bar\n# escape=`\nFROM a\n")
    assert df.directives == {}


def test_repeated_directive_is_an_error() -> None:
    with pytest.raises(DockerfileError) as info:
        parse("# escape=`\n# escape=\\\nFROM a\n")
    assert info.value.line == 2
    assert "only one escape parser directive" in info.value.message


def test_invalid_escape_directive_is_an_error() -> None:
    with pytest.raises(DockerfileError) as info:
        parse("# escape=x\nFROM a\n")
    assert info.value.line == 1
    assert "invalid escape token 'x'" in info.value.message


def test_lone_continuation_character_joins_with_the_next_line() -> None:
    df = parse("FROM alpine\n\\\nRUN echo hi\n\\\n")
    assert [(i.cmd, i.line, i.end_line) for i in df.instructions] == [("FROM", 1, 1), ("RUN", 2, 3)]
