"""A RUN whose filesystem answered EIO because of a bug of its own fails, and its upper is never kept as a layer.

The bug is put into the RUN's unionfs daemon for this test alone: a sitecustomize on the daemon's PYTHONPATH (the
daemon inherits imagebuild's environment) makes mkdir of one name fail with an exception no filesystem raises.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from tests.image.conftest import Tool, dockerfile

FAULT = textwrap.dedent(
    """
    from unionfs import union

    _mkdir = union.UnionFS.mkdir

    def mkdir(self, parent, name, mode, owner):
        if name == "fault-here":
            raise ZeroDivisionError("a fault the test put in")
        return _mkdir(self, parent, name, mode, owner)

    union.UnionFS.mkdir = mkdir
    """
)


def test_a_run_whose_mount_answered_eio_fails_and_keeps_no_layer(tool: Tool, ctx: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FAULT)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}
    # the command itself succeeds whatever mkdir answers: only the recorded EIO can fail the step
    dockerfile(ctx, "FROM busybox\nRUN mkdir /fault-here; mkdir /fine; true\n")
    failed = tool.run("build", "--no-cache", "--run-fs", "unionfs", "-t", "eio-test", str(ctx), check=False, env=env)
    assert failed.returncode != 0
    (line,) = failed.stderr.strip().splitlines()
    assert "Dockerfile:2" in line and "EIO" in line and "ZeroDivisionError" in line
    assert tool.run("inspect", "eio-test", check=False).returncode != 0  # no image was made of it
    assert not any((tool.root / "tmp").iterdir())  # the scratch upper is gone too
    ok = tool.run("build", "--no-cache", "-t", "eio-test", str(ctx))  # without the fault the same step builds
    assert ok.returncode == 0
