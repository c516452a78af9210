"""One logical line to one :class:`Instruction`: keyword, flags and arguments, checked.

Each keyword has a small handler that shapes and checks its arguments the way docker's parser
and instruction layer do; see :class:`Instruction` for the shape of ``args`` per keyword.
Heredoc bodies are attached afterwards by the parser, which owns the reading of lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import InstructionError
from .flags import parse_flags
from .heredoc import parse_heredoc_word
from .model import Instruction, KeyValue
from .mounts import MountError, parse_mount
from .suggest import closest
from .values import parse_interval_ns, parse_port_spec, parse_retries
from .words import extract_flags, parse_json_array, parse_words, split_command, split_whitespace

KEYWORDS = (
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)
HEREDOC_KEYWORDS = frozenset({"RUN", "COPY", "ADD"})
NOT_ONBUILD_TRIGGERS = frozenset({"FROM", "MAINTAINER"})
HEALTHCHECK_DURATIONS = ("interval", "timeout", "start-period", "start-interval")

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_ONBUILD_PREFIX = re.compile(r"(?i)^\s*ONBUILD\s*")


@dataclass(frozen=True)
class _Args:
    """What a handler makes of an instruction's argument text."""

    args: list[str] | str
    json_form: bool = False
    pairs: list[KeyValue] = field(default_factory=list)


_Handler = Callable[[str, str, dict[str, str], str], _Args]


def parse_instruction(text: str, line: int, end_line: int, escape: str) -> Instruction:
    """The instruction on a logical line (without heredoc bodies)."""
    keyword, rest = split_command(text)
    cmd = keyword.upper()
    if cmd not in KEYWORDS:
        raise InstructionError(unknown_instruction(keyword))
    flag_words, rest = extract_flags(rest)
    flags = parse_flags(cmd, flag_words)
    _check_mounts(flags.in_order)
    original = text.strip()
    trigger = None
    if cmd == "ONBUILD":
        trigger = _onbuild_trigger(original, rest.strip(), line, end_line, escape)
        parsed = _Args(trigger.original)
    else:
        parsed = _HANDLERS[cmd](cmd, rest.strip(), flags.by_name, escape)
    return Instruction(
        cmd=cmd,
        args=parsed.args,
        line=line,
        end_line=end_line,
        original=original,
        flags=flags.by_name,
        flag_list=flags.in_order,
        json_form=parsed.json_form,
        pairs=parsed.pairs,
        trigger=trigger,
    )


def _check_mounts(flags: list[tuple[str, str]]) -> None:
    """RUN --mount values without variables are checked now, before anything is built."""
    for name, value in flags:
        if name == "mount" and "$" not in value:
            try:
                parse_mount(value)
            except MountError as exc:
                raise InstructionError(str(exc)) from None


def can_have_heredocs(instruction: Instruction) -> bool:
    """RUN, COPY and ADD in shell form may carry heredocs, also as an ONBUILD trigger."""
    if instruction.trigger is not None:
        instruction = instruction.trigger
    return instruction.cmd in HEREDOC_KEYWORDS and not instruction.json_form


def unknown_instruction(keyword: str) -> str:
    guess = closest(keyword, KEYWORDS)
    hint = f" (did you mean {guess}?)" if guess else ""
    return f"unknown instruction '{keyword}'{hint}"


def _onbuild_trigger(original: str, rest: str, line: int, end_line: int, escape: str) -> Instruction:
    if not rest:
        raise InstructionError("ONBUILD requires at least one argument")
    keyword = split_command(rest)[0].upper()
    if keyword == "ONBUILD":
        raise InstructionError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if keyword in NOT_ONBUILD_TRIGGERS:
        raise InstructionError(f"{keyword} isn't allowed as an ONBUILD trigger")
    return parse_instruction(_ONBUILD_PREFIX.sub("", original), line, end_line, escape)


def _require(cmd: str, rest: str) -> None:
    if not rest:
        raise InstructionError(f"{cmd} requires at least one argument")


def _from(cmd: str, rest: str, flags: dict[str, str], escape: str) -> _Args:
    words = split_whitespace(rest)
    if len(words) == 3 and words[1].lower() == "as":
        if not _STAGE_NAME.match(words[2].lower()):
            raise InstructionError(
                f"invalid name for build stage: '{words[2]}', name can't start with a number or contain symbols"
            )
    elif len(words) != 1:
        raise InstructionError("FROM requires either one or three arguments")
    return _Args(words)


def _maybe_json(cmd: str, rest: str, flags: dict[str, str], escape: str) -> _Args:
    """RUN, CMD, ENTRYPOINT: a JSON array of strings is exec form, anything else shell form."""
    _require(cmd, rest)
    array = parse_json_array(rest)
    return _Args(rest) if array is None else _Args(array, json_form=True)


def _shell(cmd: str, rest: str, flags: dict[str, str], escape: str) -> _Args:
    _require(cmd, rest)
    array = parse_json_array(rest)
    if array is None:
        raise InstructionError(f'SHELL requires the arguments to be in JSON form (like ["sh", "-c"]), not: {rest}')
    if not array:
        raise InstructionError("SHELL requires at least one argument")
    return _Args(array, json_form=True)


def _json_or_words(rest: str) -> _Args:
    array = parse_json_array(rest)
    return _Args(split_whitespace(rest)) if array is None else _Args(array, json_form=True)


def _copy(cmd: str, rest: str, flags: dict[str, str], escape: str) -> _Args:
    """COPY and ADD: sources then a destination; the destination cannot be a heredoc."""
    parsed = _json_or_words(rest)
    args = parsed.args
    if len(args) == 0:
        raise InstructionError(f"{cmd} requires at least two arguments")
    if len(args) == 1:
        raise InstructionError(
            f"{cmd} requires at least two arguments, but only one was provided. Destination could not be determined."
        )
    if not parsed.json_form and parse_heredoc_word(args[-1]) is not None:
        raise InstructionError(f"{cmd} cannot accept a heredoc as a destination")
    return parsed


def _volume(cmd: str, rest: str, flags: dict[str, str], escape: str) -> _Args:
    _require(cmd, rest)
    parsed = _json_or_words(rest)
    if not parsed.args or any(not volume.strip() for volume in parsed.args):
        raise InstructionError("VOLUME specified can not be an empty string")
    return parsed


def _expose(cmd: str, rest: str, flags: dict[str, str], escape: str) -> _Args:
    """Port specs are checked now unless they hold variables, which only the build can expand."""
    _require(cmd, rest)
    ports = split_whitespace(rest)
    for port in ports:
        if "$" not in port:
            parse_port_spec(port)
    return _Args(ports)


def _name_values(cmd: str, rest: str, flags: dict[str, str], escape: str) -> _Args:
    """ENV and LABEL: ``k=v k2="v 2"``, or the legacy ``k value with spaces``."""
    words = parse_words(rest, escape)
    _require(cmd, " ".join(words))
    if "=" not in words[0]:
        parts = re.split(r"[\t\v\f\r ]+", rest, maxsplit=1)
        if len(parts) < 2:
            raise InstructionError(f"{cmd} must have two arguments")
        pairs = [KeyValue(key=parts[0], value=parts[1])]
        words = parts
    else:
        pairs = []
        for word in words:
            key, has_equals, value = word.partition("=")
            if not has_equals:
                raise InstructionError(f"Syntax error - can't find = in '{word}'. Must be of the form: name=value")
            pairs.append(KeyValue(key=key, value=value))
    if any(not pair.key for pair in pairs):
        raise InstructionError(f"{cmd} names can not be blank")
    return _Args(words, pairs=pairs)


def _arg(cmd: str, rest: str, flags: dict[str, str], escape: str) -> _Args:
    """ARG: ``name`` or ``name=default``, several per line."""
    words = parse_words(rest, escape)
    _require(cmd, " ".join(words))
    pairs = []
    for word in words:
        key, has_equals, value = word.partition("=")
        if not key:
            raise InstructionError("ARG names can not be blank")
        pairs.append(KeyValue(key=key, value=value if has_equals else None))
    return _Args(words, pairs=pairs)


def _text(cmd: str, rest: str, flags: dict[str, str], escape: str) -> _Args:
    """WORKDIR, USER, STOPSIGNAL, MAINTAINER: the whole text is the one argument."""
    _require(cmd, rest)
    return _Args(rest)


def _healthcheck(cmd: str, rest: str, flags: dict[str, str], escape: str) -> _Args:
    """HEALTHCHECK NONE, or HEALTHCHECK [flags] CMD command (exec or shell form)."""
    _require(cmd, rest)
    parts = rest.split(maxsplit=1)
    kind_word = parts[0]
    command = parts[1].strip() if len(parts) > 1 else ""
    if kind_word.upper() == "NONE":
        if command:
            raise InstructionError("HEALTHCHECK NONE takes no arguments")
        return _Args(["NONE"])
    if kind_word.upper() != "CMD":
        raise InstructionError(f"Unknown type '{kind_word}' in HEALTHCHECK (try CMD)")
    _check_health_flags(flags)
    array = parse_json_array(command) if command else None
    if array is not None:
        if not array:
            raise InstructionError("Missing command after HEALTHCHECK CMD")
        return _Args(["CMD", *array], json_form=True)
    if not command:
        raise InstructionError("Missing command after HEALTHCHECK CMD")
    return _Args(["CMD-SHELL", command])


def _check_health_flags(flags: dict[str, str]) -> None:
    for name in HEALTHCHECK_DURATIONS:
        if name in flags:
            parse_interval_ns(name, flags[name])
    if "retries" in flags:
        parse_retries(flags["retries"])


_HANDLERS: dict[str, _Handler] = {
    "ADD": _copy,
    "ARG": _arg,
    "CMD": _maybe_json,
    "COPY": _copy,
    "ENTRYPOINT": _maybe_json,
    "ENV": _name_values,
    "EXPOSE": _expose,
    "FROM": _from,
    "HEALTHCHECK": _healthcheck,
    "LABEL": _name_values,
    "MAINTAINER": _text,
    "RUN": _maybe_json,
    "SHELL": _shell,
    "STOPSIGNAL": _text,
    "USER": _text,
    "VOLUME": _volume,
    "WORKDIR": _text,
}
