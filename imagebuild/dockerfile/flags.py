"""The ``--name=value`` flags each instruction accepts, and their checking.

Docker reads leading ``--`` words as flags on every instruction and then rejects those the
instruction does not know, so ``CMD --help`` is an error, not a command.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import InstructionError
from .suggest import closest


class FlagKind(Enum):
    STRING = "string"  # --name=value, once
    BOOL = "bool"  # --name, --name=true, --name=false
    LIST = "list"  # --name=value, any number of times


_S, _B, _L = FlagKind.STRING, FlagKind.BOOL, FlagKind.LIST

FLAG_SPECS: dict[str, dict[str, FlagKind]] = {
    "FROM": {"platform": _S},
    "RUN": {"mount": _L, "network": _S, "security": _S},
    "COPY": {"from": _S, "chown": _S, "chmod": _S, "link": _B, "parents": _B, "exclude": _L},
    "ADD": {
        "chown": _S,
        "chmod": _S,
        "link": _B,
        "keep-git-dir": _B,
        "checksum": _S,
        "exclude": _L,
    },
    "HEALTHCHECK": {
        "interval": _S,
        "timeout": _S,
        "start-period": _S,
        "start-interval": _S,
        "retries": _S,
    },
}

FLAG_CHOICES: dict[tuple[str, str], frozenset[str]] = {
    ("RUN", "network"): frozenset({"default", "none", "host"}),
    ("RUN", "security"): frozenset({"sandbox", "insecure"}),
}


@dataclass(frozen=True)
class ParsedFlags:
    """Flags by name (last value wins) and every flag in the order written."""

    by_name: dict[str, str]
    in_order: list[tuple[str, str]]


def parse_flags(cmd: str, words: list[str]) -> ParsedFlags:
    """Check the flag words of instruction ``cmd`` and return their values."""
    specs = FLAG_SPECS.get(cmd, {})
    by_name: dict[str, str] = {}
    in_order: list[tuple[str, str]] = []
    for word in words:
        name, has_value, value = word.removeprefix("--").partition("=")
        kind = specs.get(name)
        if kind is None:
            raise InstructionError(_unknown_flag(cmd, name, specs))
        if name in by_name and kind is not FlagKind.LIST:
            raise InstructionError(f"duplicate flag specified: --{name}")
        value = _flag_value(cmd, name, kind, value if has_value else None)
        by_name[name] = value
        in_order.append((name, value))
    return ParsedFlags(by_name, in_order)


def _flag_value(cmd: str, name: str, kind: FlagKind, value: str | None) -> str:
    if kind is FlagKind.BOOL:
        if value is None:
            return "true"
        if value.lower() in ("true", "false"):
            return value.lower()
        if value == "":
            raise InstructionError(f"missing a value on flag: --{name}")
        raise InstructionError(f"expecting boolean value for flag --{name}, not: {value}")
    if value is None:
        raise InstructionError(f"missing a value on flag: --{name}")
    choices = FLAG_CHOICES.get((cmd, name))
    if choices is not None and value not in choices:
        allowed = ", ".join(sorted(choices))
        raise InstructionError(f"unsupported value for --{name}: {value!r} (allowed: {allowed})")
    return value


def _unknown_flag(cmd: str, name: str, specs: dict[str, FlagKind]) -> str:
    if not specs:
        return f"{cmd} takes no flags (got --{name})"
    message = f"unknown flag --{name} for {cmd}"
    guess = closest(name, specs)
    if guess is not None:
        return f"{message} (did you mean --{guess}?)"
    return f"{message} (allowed: {', '.join('--' + known for known in specs)})"
