"""Timestamps: an image mounts with the same mtimes in the store that built it and in one that imported it; with
SOURCE_DATE_EPOCH (or --timestamp) only what is newer than the epoch is clamped, the config is dated with it and
RUN sees it; `imagebuild check` compares each layer's directory with its tar."""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.conftest import Tool, dockerfile
from tests.support import is_mounted

NS = 1_000_000_000
EPOCH = 1_000_000
OLD = 500_000


@contextlib.contextmanager
def mounted(tool: Tool, image: str, point: Path) -> Iterator[Path]:
    point.mkdir()
    tool.run("mount", "--read-only", image, str(point))
    try:
        yield point
    finally:
        if is_mounted(point):
            tool.run("umount", str(point), check=False)
        if is_mounted(point):
            subprocess.run(["fusermount3", "-uz", str(point)], capture_output=True)


def walk_mtimes(root: Path) -> dict[str, int]:
    """Every entry of a mounted rootfs but its root (which no layer tar carries) -> mtime in ns."""
    found: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found["/" + str(path.relative_to(root))] = os.lstat(path).st_mtime_ns
    return found


def app_context(ctx: Path) -> Path:
    (ctx / "app").mkdir()
    (ctx / "app" / "old.txt").write_text("old\n")
    (ctx / "app" / "new.txt").write_text("new\n")
    os.utime(ctx / "app" / "old.txt", ns=(0, OLD * NS + 250_000_000))  # sub-second: the tar keeps whole seconds
    return dockerfile(
        ctx,
        "FROM busybox\n"
        "COPY app /app\n"
        f'RUN touch -d @{OLD} /app/touched && echo made > /app/made && echo "[$SOURCE_DATE_EPOCH]" > /app/epoch\n',
    )


def layer_problems(tool: Tool) -> list[str]:
    """What `imagebuild check` says about layers (other lines may name leftovers of any store on the machine)."""
    return [line for line in tool.run("check", check=False).stdout.splitlines() if line.startswith("layer ")]


def created(tool: Tool, image: str) -> str:
    return str(tool.inspect(image)["Created"])


def test_an_imported_image_mounts_with_the_mtimes_of_the_store_that_built_it(
    tool: Tool, ctx: Path, tmp_path: Path
) -> None:
    tool.build(app_context(ctx), "-t", "times-roundtrip")
    layout = tmp_path / "layout"
    tool.run("export", "times-roundtrip", "-o", str(layout))
    other = Tool(tmp_path / "other-store")
    other.run("import", str(layout))
    with (
        mounted(tool, "times-roundtrip", tmp_path / "built") as built,
        mounted(other, "times-roundtrip", tmp_path / "imported") as imported,
    ):
        here, there = walk_mtimes(built), walk_mtimes(imported)
        made = os.stat(built / "app" / "made").st_mtime_ns
    assert here == there
    assert all(ns % NS == 0 for ns in here.values())  # whole seconds, in the directory as in the tar
    assert here["/app/old.txt"] == OLD * NS and here["/app/touched"] == OLD * NS
    assert abs(made / NS - datetime.datetime.now(datetime.UTC).timestamp()) < 600  # a real time, not 0
    assert layer_problems(tool) == [] and layer_problems(other) == []


def test_source_date_epoch_clamps_only_newer_mtimes_dates_the_image_and_reaches_run(
    tool: Tool, ctx: Path, tmp_path: Path
) -> None:
    app_context(ctx)
    tool.run("build", "-t", "times-epoch", str(ctx), env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    assert created(tool, "times-epoch") == "1970-01-12T13:46:40Z"
    with (
        mounted(tool, "times-epoch", tmp_path / "epoch") as root,
        mounted(tool, "busybox", tmp_path / "base") as base,
    ):
        times = walk_mtimes(root)
        epoch_file = (root / "app" / "epoch").read_text()
        base_times = walk_mtimes(base)
    assert times["/app/old.txt"] == OLD * NS and times["/app/touched"] == OLD * NS  # older: kept
    assert times["/app/new.txt"] == EPOCH * NS and times["/app/made"] == EPOCH * NS  # newer: the epoch
    assert times["/bin/busybox"] == base_times["/bin/busybox"] > EPOCH * NS  # the base image keeps its times
    assert epoch_file == f"[{EPOCH}]\n"
    again = tool.build(ctx, "--no-cache", "--timestamp", str(EPOCH))  # the flag is the variable
    assert tool.image_id(again) == tool.inspect("times-epoch")["Id"]
    assert layer_problems(tool) == []


def test_without_an_epoch_the_image_is_dated_now_and_run_sees_no_epoch(tool: Tool, ctx: Path, tmp_path: Path) -> None:
    app_context(ctx)
    tool.run("build", "-t", "times-now", str(ctx), env={"SOURCE_DATE_EPOCH": ""})
    when = datetime.datetime.strptime(created(tool, "times-now"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    assert abs((datetime.datetime.now(datetime.UTC) - when).total_seconds()) < 600
    with mounted(tool, "times-now", tmp_path / "now") as root:
        assert (root / "app" / "epoch").read_text() == "[]\n"


@pytest.mark.usefixtures("tool")
def test_check_names_a_layer_whose_directory_no_longer_matches_its_tar(ctx: Path, tmp_path: Path) -> None:
    (ctx / "file").write_text("content\n")
    dockerfile(ctx, "FROM scratch\nCOPY file /file\n")
    store = Tool(tmp_path / "store")
    built = store.build(ctx, "-t", "checked")
    assert layer_problems(store) == []
    (diff_id,) = store.inspect(store.image_id(built))["RootFS"]["Layers"]  # type: ignore[index,misc]
    os.utime(store.root / "layers" / diff_id.removeprefix("sha256:") / "file", (OLD, OLD))
    done = store.run("check", check=False)
    assert done.returncode == 1
    (line,) = layer_problems(store)
    assert line.startswith(f"layer {diff_id}: ") and "file: mtime 1970-01-06T18:53:20Z here" in line, line


def test_a_bad_timestamp_is_one_line_before_anything_is_read(tool: Tool, ctx: Path) -> None:
    dockerfile(ctx, "FROM scratch\n")
    for args, env in ((["--timestamp", "soon"], {}), ([], {"SOURCE_DATE_EPOCH": "soon"})):
        done = tool.run("build", *args, str(ctx), check=False, env=env)
        assert done.returncode == 1 and done.stdout == "", done.stdout
        assert len(done.stderr.splitlines()) == 1 and "is not a number of seconds" in done.stderr
