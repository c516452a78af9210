"""Just enough shell to lint RUN: split a script into simple commands and name what each one runs.

Not a shell parser: quotes and backslashes group words, `&&`, `||`, `;`, `|`, `&`, newlines and the
grouping words `(`, `)`, `{`, `}`, `then`, `do`... separate commands, `# comments` are dropped, and leading
`VAR=value` assignments and wrappers such as `sudo`, `env`, `exec` are seen through.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from imagebuild.dockerfile import Instruction

_OPERATORS = ("&&", "||", ";;", ";", "|", "&", "\n", "(", ")")
_KEYWORDS = frozenset({"{", "}", "!", "then", "else", "elif", "do", "if", "while", "until", "fi", "done", "esac"})
_WRAPPERS = frozenset({"exec", "env", "nohup", "time", "command", "nice", "xargs", "eatmydata"})
SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh", "busybox"})


@dataclass(frozen=True)
class Command:
    """One simple command: its words (quotes removed), from the program name on.

    ``prefixes`` holds wrappers seen through before the program (`sudo` for `sudo apt-get ...`).
    """

    words: tuple[str, ...]
    prefixes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return os.path.basename(self.words[0]) if self.words else ""

    @property
    def args(self) -> tuple[str, ...]:
        return self.words[1:]

    def operands(self, options_with_values: frozenset[str] = frozenset()) -> list[str]:
        """The arguments that are not options (nor the values of ``options_with_values``)."""
        out: list[str] = []
        skip = False
        for word in self.args:
            if skip:
                skip = False
            elif word.startswith("-") and word != "-":
                skip = word in options_with_values
            else:
                out.append(word)
        return out

    def subcommand(self, options_with_values: frozenset[str] = frozenset()) -> str:
        """The first operand (`install` in `apt-get -y install x`), or ""."""
        operands = self.operands(options_with_values)
        return operands[0] if operands else ""


def tokens(script: str) -> list[str]:
    """Words and operators of ``script``; a word keeps no quotes. Unterminated quotes end at the end."""
    out: list[str] = []
    word: list[str] = []
    in_word = False
    i = 0

    def flush() -> None:
        nonlocal word, in_word
        if in_word:
            out.append("".join(word))
        word, in_word = [], False

    while i < len(script):
        ch = script[i]
        if ch == "\\":
            if script.startswith("\\\n", i):
                i += 2
                continue
            word.append(script[i + 1 : i + 2])
            in_word = True
            i += 2
            continue
        if ch in "'\"":
            end = _closing_quote(script, i)
            body = script[i + 1 : end]
            word.append(body if ch == "'" else body.replace('\\"', '"').replace("\\\\", "\\"))
            in_word = True
            i = end + 1
            continue
        if ch == "#" and not in_word:
            end = script.find("\n", i)
            i = len(script) if end < 0 else end
            continue
        operator = next((op for op in _OPERATORS if script.startswith(op, i)), None)
        if operator is not None:
            flush()
            out.append(operator)
            i += len(operator)
            continue
        if ch.isspace():
            flush()
        else:
            word.append(ch)
            in_word = True
        i += 1
    flush()
    return out


def _closing_quote(script: str, start: int) -> int:
    quote = script[start]
    i = start + 1
    while i < len(script):
        if script[i] == "\\" and quote == '"':
            i += 2
            continue
        if script[i] == quote:
            return i
        i += 1
    return len(script)


def commands(script: str) -> list[Command]:
    """The simple commands of ``script``, in order."""
    out: list[Command] = []
    current: list[str] = []
    for token in [*tokens(script), ";"]:
        if token in _OPERATORS:
            if current:
                out.append(_command(current))
            current = []
        elif not current and token in _KEYWORDS:
            continue
        else:
            current.append(token)
    return out


def _command(words: list[str]) -> Command:
    i = 0
    while i < len(words) and _is_assignment(words[i]):
        i += 1
    prefixes: list[str] = []
    while i < len(words):
        name = os.path.basename(words[i])
        if name == "sudo" or name in _WRAPPERS:
            prefixes.append(name)
            i += 1
            while i < len(words) and (words[i].startswith("-") or _is_assignment(words[i])):
                i += 1
            continue
        break
    return Command(tuple(words[i:]), tuple(prefixes))


def _is_assignment(word: str) -> bool:
    name, equals, _ = word.partition("=")
    return bool(equals) and name.replace("_", "a").isalnum() and not name[:1].isdigit()


def run_script(instruction: Instruction) -> str:
    """The shell script a RUN runs, as far as lint can see it.

    Shell form: the command line, plus the bodies of its heredocs when the line only feeds them to a shell
    (`RUN <<EOF`, `RUN bash -e <<EOF`). Exec form: the `-c` script of a shell, else the argv joined.
    """
    args = instruction.args
    if isinstance(args, list):
        if args and os.path.basename(args[0]) in SHELLS:
            for index, word in enumerate(args[1:-1], start=1):
                if word.startswith("-") and "c" in word[1:]:
                    return args[index + 1]
        return " ".join(_quote(word) for word in args)
    script = args
    if instruction.heredocs:
        rest = [word for word in tokens(args) if not word.startswith("<<") and not word[:1].isdigit()]
        if not rest or (os.path.basename(rest[0]) in SHELLS and all(w.startswith("-") for w in rest[1:])):
            script = "\n".join(heredoc.content for heredoc in instruction.heredocs)
    return script


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'" if any(ch.isspace() or ch in "'\";&|" for ch in word) else word
