"""RUN steps and containers resolve names with the host's /etc/resolv.conf and /etc/hosts, as docker and buildah
give them: an image from a registry has no /etc/resolv.conf, and apt-get in it could not reach its mirror. The
files are copies: what a command writes to them reaches neither the host nor the image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.image.conftest import Tool, dockerfile

HOST = Path("/etc/resolv.conf")


@pytest.fixture(autouse=True)
def host_files() -> None:
    if not HOST.is_file() or not Path("/etc/hosts").is_file():
        pytest.skip("this machine has no /etc/resolv.conf or /etc/hosts to give")


def test_a_run_step_sees_the_host_name_files_and_the_layer_keeps_none(
    tool: Tool, ctx: Path, mounted_image: Callable[[str], Path]
) -> None:
    before = HOST.read_bytes()
    dockerfile(
        ctx,
        "FROM busybox\nRUN cat /etc/resolv.conf /etc/hosts > /seen && echo 'nameserver 192.0.2.1' > /etc/resolv.conf\n",
    )
    tool.build(ctx, "-t", "names")
    root = mounted_image("names")
    assert (root / "seen").read_bytes() == before + Path("/etc/hosts").read_bytes()
    assert not (root / "etc").exists()  # the busybox base has no /etc: the step's mountpoints are not its work
    assert HOST.read_bytes() == before  # the step wrote to its own copy


def test_a_container_sees_the_host_resolv_conf(tool: Tool) -> None:
    done = tool.run("run", "--rm", "busybox", "cat", "/etc/resolv.conf")
    assert done.stdout.encode() == HOST.read_bytes()
