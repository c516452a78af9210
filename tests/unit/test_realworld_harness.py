"""The real-world harness tells a failed download from a failed build (tests/realworld/builders.py): only the
first is built again."""

from __future__ import annotations

import pytest

from tests.realworld.builders import network_error


@pytest.mark.parametrize(
    "line",
    [
        "Err:1 http://deb.debian.org/debian bookworm InRelease  Temporary failure resolving 'deb.debian.org'",
        "E: Failed to fetch http://deb.debian.org/debian/pool/main/p/python3.11/libpython3.11_3.11.2-6_amd64.deb"
        "  Connection timed out [IP: 151.101.2.132 80]",
        "E: Unable to fetch some archives, maybe run apt-get update or try with --fix-missing?",
        "WARNING: Retrying (Retry(total=0, connect=None, read=None)) after connection broken by "
        "'NewConnectionError(...)': /simple/flask/",
        "pip._vendor.urllib3.exceptions.ReadTimeoutError: HTTPSConnectionPool(host='files.pythonhosted.org', "
        "port=443): Read timed out.",
        "npm ERR! code ECONNRESET",
        "npm ERR! network request to https://registry.npmjs.org/express failed, reason: getaddrinfo EAI_AGAIN",
    ],
)
def test_download_failures_are_network_errors(line: str) -> None:
    output = f"STEP 3/7: RUN apt-get update && apt-get install -y python3\n{line}\nError: building at STEP\n"
    assert network_error(output) == line.strip()


@pytest.mark.parametrize(
    "line",
    [
        "E: Unable to locate package pyhton3",
        "ERROR: Could not find a version that satisfies the requirement flask==99.0 (from versions: 0.1, 3.0.0)",
        "/bin/sh: 1: gcc: not found",
        "npm ERR! code E404",
        "cp: cannot stat 'missing.txt': No such file or directory",
    ],
)
def test_build_failures_are_not(line: str) -> None:
    assert network_error(f"STEP 2/4: RUN something\n{line}\nexit status 1\n") is None
