"""Heredocs on RUN, COPY and ADD."""

from __future__ import annotations

import pytest

from imagebuild.dockerfile import DockerfileError, Heredoc, parse


def test_run_heredoc() -> None:
    text = "FROM alpine\nRUN <<EOF\napk add curl\necho $HOME\nEOF\nUSER nobody\n"
    df = parse(text)
    run = df.instructions[1]
    assert run.args == "<<EOF"
    assert run.heredocs == [Heredoc(name="EOF", content="apk add curl\necho $HOME\n", chomp_tabs=False, expand=True)]
    assert (run.line, run.end_line) == (2, 5)
    assert df.instructions[2].line == 6


def test_heredoc_body_is_raw() -> None:
    text = "FROM alpine\nRUN <<EOF\n# not a comment\n\n  indented \\\nEOF\n"
    assert parse(text).instructions[1].heredocs[0].content == "# not a comment\n\n  indented \\\n"


def test_chomp_strips_leading_tabs_also_before_the_terminator() -> None:
    text = "FROM alpine\nRUN <<-EOT\n\t\techo a\n\t  echo b\n\tEOT\n"
    doc = parse(text).instructions[1].heredocs[0]
    assert doc.chomp_tabs is True
    assert doc.content == "echo a\n  echo b\n"


def test_without_chomp_an_indented_terminator_is_body() -> None:
    text = "FROM alpine\nRUN <<EOT\n\tEOT\nEOT\n"
    assert parse(text).instructions[1].heredocs[0].content == "\tEOT\n"


@pytest.mark.parametrize("word", ['<<"EOF"', "<<'EOF'", '<<E"O"F'])
def test_quoted_delimiter_disables_expansion(word: str) -> None:
    doc = parse(f"FROM alpine\nRUN cat {word}\n$HOME\nEOF\n").instructions[1].heredocs[0]
    assert doc.name == "EOF"
    assert doc.expand is False
    assert doc.content == "$HOME\n"


def test_several_heredocs_on_one_line() -> None:
    text = "FROM alpine\nRUN <<A cat /dev/stdin; 3<<-B cat /dev/fd/3\nfirst\nA\n\tsecond\n\tB\nUSER x\n"
    df = parse(text)
    run = df.instructions[1]
    assert [(d.name, d.content, d.fd, d.chomp_tabs) for d in run.heredocs] == [
        ("A", "first\n", None, False),
        ("B", "second\n", 3, True),
    ]
    assert run.end_line == 6
    assert df.instructions[2].line == 7


def test_copy_heredoc_to_a_file() -> None:
    text = "FROM alpine\nCOPY <<EOF /etc/motd\nHello\nEOF\n"
    copy = parse(text).instructions[1]
    assert copy.args == ["<<EOF", "/etc/motd"]
    assert copy.heredocs[0].content == "Hello\n"


def test_add_heredoc_with_continued_line() -> None:
    text = "FROM alpine\nADD --chmod=0644 <<EOF \\\n  /conf\nkey=value\nEOF\n"
    add = parse(text).instructions[1]
    assert add.args == ["<<EOF", "/conf"]
    assert add.heredocs[0].content == "key=value\n"
    assert (add.line, add.end_line) == (2, 5)


def test_heredoc_inside_onbuild() -> None:
    text = "FROM alpine\nONBUILD RUN <<EOF\necho hi\nEOF\n"
    onbuild = parse(text).instructions[1]
    assert onbuild.heredocs[0].content == "echo hi\n"
    assert onbuild.trigger is not None
    assert onbuild.trigger.heredocs == onbuild.heredocs


@pytest.mark.parametrize(
    "line",
    [
        'RUN ["cat", "<<EOF"]',  # exec form: no heredocs
        "CMD cat <<EOF",  # not an instruction that takes heredocs
        "RUN echo '<<EOF'",  # quoted
        "RUN cat <<<EOF",  # a here-string, not a heredoc
    ],
)
def test_not_a_heredoc(line: str) -> None:
    df = parse(f"FROM alpine\n{line}\nUSER x\n")
    assert df.instructions[1].heredocs == []
    assert (df.instructions[2].cmd, df.instructions[2].line) == ("USER", 3)  # not swallowed as a body


def test_unterminated_heredoc() -> None:
    with pytest.raises(DockerfileError) as info:
        parse("FROM alpine\nRUN <<EOF\necho hi\n")
    assert info.value.line == 2
    assert "unterminated heredoc" in info.value.message


def test_copy_to_a_heredoc_destination_is_an_error() -> None:
    with pytest.raises(DockerfileError) as info:
        parse("FROM alpine\nCOPY a <<EOF\nx\nEOF\n")
    assert info.value.line == 2
    assert "cannot accept a heredoc as a destination" in info.value.message
