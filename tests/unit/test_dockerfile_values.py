"""EXPOSE port specs and HEALTHCHECK durations, checked as docker checks them."""

from __future__ import annotations

import pytest

from imagebuild.dockerfile import PortSpec, parse_duration_ns, parse_port_spec
from imagebuild.dockerfile.errors import InstructionError
from imagebuild.dockerfile.values import parse_interval_ns, parse_retries


@pytest.mark.parametrize(
    ("spec", "port"),
    [
        ("80", PortSpec(80, 80, "tcp")),
        ("443/tcp", PortSpec(443, 443, "tcp")),
        ("53/UDP", PortSpec(53, 53, "udp")),
        ("8000-8010", PortSpec(8000, 8010, "tcp")),
        ("9000-9001/sctp", PortSpec(9000, 9001, "sctp")),
        ("0", PortSpec(0, 0, "tcp")),
        ("65535", PortSpec(65535, 65535, "tcp")),
    ],
)
def test_port_specs(spec: str, port: PortSpec) -> None:
    assert parse_port_spec(spec) == port


@pytest.mark.parametrize(
    "spec", ["", "http", "65536", "80-", "-80", "80/icmp", "10-5", "8080:80", "+80", "\uff18\uff10"]
)
def test_bad_port_specs(spec: str) -> None:
    with pytest.raises(InstructionError):
        parse_port_spec(spec)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("30s", 30_000_000_000),
        ("1m30s", 90_000_000_000),
        ("1.5h", 5_400_000_000_000),
        ("500ms", 500_000_000),
        ("10us", 10_000),
        ("10µs", 10_000),
        ("7ns", 7),
        (".5s", 500_000_000),
        ("-2s", -2_000_000_000),
    ],
)
def test_durations(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["", "5", "s", "1x", "1s2", "1 s", "--1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InstructionError):
        parse_duration_ns(text)


def test_interval_rules() -> None:
    assert parse_interval_ns("interval", "0s") == 0
    assert parse_interval_ns("interval", "1ms") == 1_000_000
    with pytest.raises(InstructionError, match="less than 1ms"):
        parse_interval_ns("interval", "999us")
    with pytest.raises(InstructionError, match="negative"):
        parse_interval_ns("interval", "-1s")


def test_retries() -> None:
    assert parse_retries("3") == 3
    assert parse_retries("0") == 0
    for bad in ["-1", "3.0", " 3", "x", ""]:
        with pytest.raises(InstructionError):
            parse_retries(bad)
