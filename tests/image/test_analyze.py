"""imagebuild analyze: the waste a user ships, found where it is, and a pipeline that fails on it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.image.conftest import Tool, dockerfile

TEN_MIB = 10 * 1024 * 1024


def test_a_file_deleted_in_a_later_run_is_reported_as_waste(tool: Tool, ctx: Path) -> None:
    dockerfile(ctx, "FROM busybox\nRUN dd if=/dev/zero of=/big.bin bs=1M count=10 2>/dev/null\nRUN rm /big.bin\n")
    built = tool.build(ctx, "-t", "wasteful")
    assert "Efficiency:" in built.stdout and "imagebuild analyze" in built.stdout  # the build points at analyze
    report = json.loads(tool.run("analyze", "wasteful", "--format", "json").stdout)
    assert report["wasted_bytes"] == TEN_MIB and report["efficiency"] < 1.0
    [waste] = report["waste"]
    base_layers = len(tool.inspect("busybox")["RootFS"]["Layers"])  # type: ignore[index]
    assert (waste["path"], waste["size"], waste["why"]) == ("big.bin", TEN_MIB, "deleted")
    assert (waste["added_in"], waste["dropped_in"]) == (base_layers, base_layers + 1)
    text = tool.run("analyze", "wasteful").stdout
    assert "/big.bin" in text and f"added in layer {base_layers}, deleted in layer {base_layers + 1}" in text
    failed = tool.run("analyze", "wasteful", "--ci", check=False)
    assert failed.returncode == 1 and "efficiency" in failed.stderr
    tree = tool.run("analyze", "wasteful", "--layer", str(base_layers), "--tree").stdout
    assert "+ big.bin" in tree


def test_the_same_work_in_one_run_wastes_nothing(tool: Tool, ctx: Path) -> None:
    dockerfile(ctx, "FROM busybox\nRUN dd if=/dev/zero of=/big.bin bs=1M count=10 2>/dev/null && rm /big.bin\n")
    built = tool.build(ctx, "-t", "tidy")
    assert "0B of" in built.stdout and "imagebuild analyze" not in built.stdout
    report = json.loads(tool.run("analyze", "tidy", "--format", "json").stdout)
    assert report["wasted_bytes"] == 0 and report["efficiency"] == 1.0 and report["waste"] == []
    assert tool.run("analyze", "tidy", "--ci").returncode == 0


def test_overwrites_and_duplicates_across_layers(tool: Tool, ctx: Path) -> None:
    (ctx / "data").write_text("d" * 5000)
    dockerfile(ctx, "FROM busybox\nCOPY data /a\nCOPY data /b\nRUN echo new > /a\nCOPY data /c\n")
    tool.build(ctx, "-t", "dupes")
    report = json.loads(tool.run("analyze", "dupes", "--format", "json").stdout)
    whys = sorted((w["path"], w["why"]) for w in report["waste"])
    assert ("a", "overwritten") in whys and ("c", "duplicate of b") in whys
    assert report["layers"][-2]["changed"] == 1 and report["wasted_bytes"] == 5000 + 5000


def test_a_no_op_rebuild_says_the_same_efficiency_without_scanning_the_image_again(tool: Tool, ctx: Path) -> None:
    dockerfile(ctx, "FROM busybox\nRUN dd if=/dev/zero of=/w.bin bs=1K count=64 2>/dev/null\nRUN rm /w.bin\n")
    first = tool.build(ctx, "-t", "summarised")
    image_id = tool.image_id(first)
    line = next(x for x in first.stdout.splitlines() if x.startswith("Efficiency:"))
    assert "imagebuild analyze" in line, line  # the rm wastes the 64 KiB
    kept = tool.root / "cache" / "summaries" / f"{image_id.removeprefix('sha256:')}.json"
    assert json.loads(kept.read_text()) == {"line": line}  # worked out once, for this image id
    again = tool.build(ctx, "-t", "summarised")
    assert tool.image_id(again) == image_id
    assert next(x for x in again.stdout.splitlines() if x.startswith("Efficiency:")) == line
