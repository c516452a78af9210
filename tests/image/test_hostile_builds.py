"""Builds that try to reach outside: the context, the archive, the rootfs. Each is refused or contained."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

from tests.image.conftest import Tool, dockerfile


def test_copy_cannot_leave_the_context(tool: Tool, ctx: Path, tmp_path: Path, mounted_image: Any) -> None:
    outside = tmp_path / "outside-secret"
    outside.write_text("host secret\n")
    os.symlink(str(outside), ctx / "link-out")
    for source in ("../outside-secret", "/../outside-secret"):
        dockerfile(ctx, f"FROM busybox\nCOPY {source} /x\n")
        done = tool.build(ctx, check=False)
        assert done.returncode == 1 and ("outside the build context" in done.stderr or "not found" in done.stderr)
    # a source that is a symlink is followed, as docker and buildah do, but inside the context: not to the host
    dockerfile(ctx, "FROM busybox\nCOPY link-out /in-image\n")
    done = tool.build(ctx, check=False)
    assert done.returncode == 1 and "'link-out' is a symlink to nothing in the build context" in done.stderr
    (ctx / ".dockerignore").write_text("../../etc\n/../../../\n")  # patterns that point out change nothing
    dockerfile(ctx, "FROM busybox\nCOPY . /ctx\n")
    tool.build(ctx, "-t", "ignoring")
    root = mounted_image("ignoring")
    link = root / "ctx" / "link-out"
    assert os.path.islink(link) and os.readlink(link) == str(outside)  # inside a directory: the link, not the file


def test_add_of_a_hostile_archive_is_refused(tool: Tool, ctx: Path, tmp_path: Path) -> None:
    for name in ("../../escape", "/abs-escape"):
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        (ctx / "evil.tar").write_bytes(data.getvalue())
        dockerfile(ctx, "FROM busybox\nADD evil.tar /opt/\n")
        done = tool.build(ctx, check=False)
        assert done.returncode == 1 and "ADD evil.tar" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "escape").exists() and not os.path.exists("/abs-escape")


def test_run_cannot_write_outside_its_rootfs(tool: Tool, ctx: Path, tmp_path: Path) -> None:
    sentinel = tmp_path / "host-sentinel"
    sentinel.write_text("untouched\n")
    dockerfile(
        ctx,
        f"FROM busybox\nRUN mkdir -p {tmp_path} && echo overwritten > {sentinel} && "
        f"ln -s / /hostroot && echo y > /hostroot/{sentinel.name} ; true\n",
    )
    tool.build(ctx, "-t", "contained")
    assert sentinel.read_text() == "untouched\n"  # the RUN wrote into the image, not the host
