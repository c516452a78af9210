"""`imagebuild build -o`: the final rootfs to a directory or a tar, the image as an OCI layout tar.

Each rootfs written is compared, entry by entry (type, mode, owner, xattrs, content, link target), with what
`imagebuild mount` of the same image shows; the OCI tar is read by skopeo and unpacked by umoci.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.image.conftest import Tool, dockerfile
from tests.support import snapshot

# whiteouts, an opaque directory, a hard link, a symlink, another owner, setuid, a stage copied from
LAYERED = """\
FROM busybox AS other
RUN echo from-other > /other
FROM busybox
RUN mkdir -p /d/sub /opq && echo hi > /d/sub/f && ln /d/sub/f /d/hard && ln -s f /d/sub/link \\
 && chown 1000:1001 /d/sub/f && chmod 4755 /d/sub/f && echo x > /opq/gone && echo y > /gone-too
RUN rm -rf /opq /gone-too /bin/ls && mkdir /opq && echo z > /opq/kept
COPY --from=other /other /other
"""

Mount = Callable[[str], Path]


def built(tool: Tool, ctx: Path, *outputs: str) -> subprocess.CompletedProcess[str]:
    dockerfile(ctx, LAYERED)
    return tool.build(ctx, "-t", "outputs:1", *(arg for o in outputs for arg in ("-o", o)))


def test_local_and_tar_outputs_are_the_rootfs_a_mount_shows(
    tool: Tool, ctx: Path, tmp_path: Path, mounted_image: Mount
) -> None:
    local, short, flat = tmp_path / "local", tmp_path / "short", tmp_path / "rootfs.tar"
    done = built(tool, ctx, f"type=local,dest={local}", str(short), f"type=tar,dest={flat}")
    assert f"Wrote the rootfs to {local} (local)" in done.stdout
    point = mounted_image("outputs:1")
    mounted = snapshot(point)
    assert snapshot(local, times=True) == snapshot(point, times=True)
    assert snapshot(short) == mounted
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xpf", str(flat), "-C", str(unpacked), "--numeric-owner"], check=True)
    assert snapshot(unpacked) == mounted
    seen = snapshot(local)
    assert "opq/gone" not in seen and "gone-too" not in seen and "bin/ls" not in seen and "opq/kept" in seen
    assert seen["d/sub/f"][2:4] == (1000, 1001) and seen["d/sub/f"][1] == 0o4755
    assert os.stat(local / "d/hard").st_ino == os.stat(local / "d/sub/f").st_ino  # still one file
    with tarfile.open(flat) as tar:
        names = tar.getnames()
    assert names[:3] == ["bin", "bin/[", "bin/[["] and not any(".wh." in n for n in names)


def test_tar_to_stdout_keeps_the_build_output_on_stderr(tool: Tool, ctx: Path, tmp_path: Path) -> None:
    dockerfile(ctx, LAYERED)
    done = subprocess.run(
        [*tool_cmd(tool), "build", "-t", "outputs:1", "-o", "-", str(ctx)], capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    (tmp_path / "out.tar").write_bytes(done.stdout)
    with tarfile.open(tmp_path / "out.tar") as tar:
        assert tar.getmember("other").isreg()
    assert b"Successfully built" in done.stderr and b"Successfully built" not in done.stdout


def tool_cmd(tool: Tool) -> list[str]:
    from tests.image.conftest import IMAGEBUILD

    return [*IMAGEBUILD, "--root", str(tool.root)]


def test_oci_output_is_read_by_skopeo_and_unpacked_by_umoci(
    tool: Tool, ctx: Path, tmp_path: Path, mounted_image: Mount
) -> None:
    if shutil.which("skopeo") is None or shutil.which("umoci") is None:
        pytest.skip("skopeo and umoci are needed")
    archive = tmp_path / "image.tar"
    built(tool, ctx, f"type=oci,dest={archive}")
    seen = json.loads(
        subprocess.run(
            ["skopeo", "inspect", f"oci-archive:{archive}"], capture_output=True, text=True, check=True
        ).stdout
    )
    layers = tool.inspect("outputs:1")["Manifest"]["Layers"]  # type: ignore[index]
    assert seen["Layers"] == [layer["digest"] for layer in layers]
    layout = tmp_path / "layout"
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(layout)], check=True)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:outputs:1", str(bundle)], check=True, capture_output=True)
    assert snapshot(bundle / "rootfs") == snapshot(mounted_image("outputs:1"))


def test_output_errors_are_one_line(tool: Tool, ctx: Path, tmp_path: Path) -> None:
    dockerfile(ctx, "FROM busybox\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    for value, says in (
        ("type=docker,dest=x", "type=docker is not supported"),
        ("type=local", "names no dest"),
        (str(tmp_path / "full"), "not an empty directory"),
        (f"type=tar,dest={tmp_path}", "is a directory"),
        (f"type=oci,dest={tmp_path}/no/such/file.tar", "does not exist"),
    ):
        done = tool.build(ctx, "-o", value, check=False)
        assert done.returncode == 1 and says in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
