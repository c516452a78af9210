"""Values inside instructions that docker checks: EXPOSE port specs, HEALTHCHECK durations."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InstructionError

PROTOCOLS = frozenset({"tcp", "udp", "sctp"})
MIN_INTERVAL_NS = 1_000_000  # docker's minimum HEALTHCHECK duration: 1ms

_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


@dataclass(frozen=True)
class PortSpec:
    """An exposed port or port range: ``8000-8010/udp`` is ``PortSpec(8000, 8010, "udp")``."""

    start: int
    end: int
    protocol: str = "tcp"


def parse_port_spec(spec: str) -> PortSpec:
    """``port[-port][/protocol]`` as docker's EXPOSE accepts it (protocol tcp, udp or sctp)."""
    ports, _, protocol = spec.partition("/")
    protocol = protocol.lower() if protocol else "tcp"
    if protocol not in PROTOCOLS:
        raise InstructionError(f"invalid proto: {protocol}")
    first, dash, last = ports.partition("-")
    start = _port_number(first, spec)
    end = _port_number(last, spec) if dash else start
    if end < start:
        raise InstructionError(f"invalid range specified for port: {spec}")
    return PortSpec(start, end, protocol)


def _port_number(text: str, spec: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise InstructionError(f"invalid containerPort: {spec}")
    return int(text)


def parse_duration_ns(text: str) -> int:
    """A Go duration (``30s``, ``1m30s``, ``1.5h``, ``500ms``, ``0``) in nanoseconds."""
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return 0
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise InstructionError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _UNIT_NS[match.group(2)]
        pos = match.end()
    if not body:
        raise InstructionError(f'time: invalid duration "{text}"')
    return sign * round(total)


def parse_interval_ns(flag: str, text: str) -> int:
    """A HEALTHCHECK duration flag: 0 (the default) or at least 1ms."""
    value = parse_duration_ns(text)
    if value == 0:
        return 0
    if value < 0:
        raise InstructionError(f"--{flag} cannot be negative ({text})")
    if value < MIN_INTERVAL_NS:
        raise InstructionError(f"--{flag} cannot be less than 1ms ({text})")
    return value


def parse_retries(text: str) -> int:
    """The HEALTHCHECK ``--retries`` count: an integer, not negative."""
    if re.fullmatch(r"[+-]?[0-9]+", text) is None:
        raise InstructionError(f"--retries must be an integer, not {text!r}")
    value = int(text)
    if value < 0:
        raise InstructionError(f"--retries cannot be negative ({value})")
    return value
