"""The bit of shell lint needs: simple commands out of a RUN, wrappers seen through, scripts of every RUN form."""

from __future__ import annotations

import pytest

from imagebuild.dockerfile import parse
from imagebuild.lint.shell import commands, run_script


def names(script: str) -> list[str]:
    return [c.name for c in commands(script)]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "apt-get update && apt-get install -y x || true; ls | wc -l & wait",
            ["apt-get"] * 2 + ["true", "ls", "wc", "wait"],
        ),
        ("echo 'a && cd /x' \"b; sudo\" c\\;d", ["echo"]),
        ("(cd /src && make)", ["cd", "make"]),
        ("if [ -f x ]; then cd /x; fi", ["[", "cd"]),
        ("DEBIAN_FRONTEND=noninteractive apt-get install -y x", ["apt-get"]),
        ("sudo -E env A=1 /usr/bin/apt-get update", ["apt-get"]),
        ("echo a # && cd /x\nmake", ["echo", "make"]),
        ("make \\\n  install", ["make"]),
    ],
)
def test_commands_and_their_names(script: str, expected: list[str]) -> None:
    assert names(script) == expected


def test_words_lose_their_quotes_and_wrappers_are_remembered() -> None:
    (command,) = commands("sudo -E apt-get -o 'Dpkg::Options::=--force-confdef' install \"my pkg\"")
    assert command.prefixes == ("sudo",)
    assert command.words == ("apt-get", "-o", "Dpkg::Options::=--force-confdef", "install", "my pkg")
    assert command.subcommand(frozenset({"-o"})) == "install"


def script_of(run_line: str) -> str:
    (ins,) = parse("FROM x\n" + run_line).stages[0].instructions
    return run_script(ins)


def test_scripts_of_each_run_form() -> None:
    assert script_of("RUN make && make install\n") == "make && make install"
    assert script_of('RUN ["sh", "-c", "cd /x && make"]\n') == "cd /x && make"
    assert script_of('RUN ["/usr/bin/make", "all"]\n') == "/usr/bin/make all"
    assert script_of("RUN <<EOF\ncd /x\nmake\nEOF\n") == "cd /x\nmake\n"
    assert script_of("RUN bash -e <<EOF\ncd /x\nEOF\n") == "cd /x\n"
    # a heredoc fed to another program is its data, not shell
    assert script_of("RUN python3 <<EOF\nimport os\nEOF\n") == "python3 <<EOF"
