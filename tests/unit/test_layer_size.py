"""A layer's content size, the one definition every command shows: pure over a directory."""

from __future__ import annotations

import os
from pathlib import Path

from imagebuild.analyze import analyze, layer_size


def test_symlinks_hard_links_and_empty_files_count_and_whiteouts_do_not(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "d").mkdir(parents=True)
    (layer / "d" / "data").write_bytes(b"x" * 1000)
    os.link(layer / "d" / "data", layer / "d" / "data-link")  # the data once
    (layer / "empty").write_bytes(b"")
    (layer / "link").symlink_to("/bin/busybox")  # its target's length, 12
    os.mkfifo(layer / "fifo")
    (layer / ".wh.gone").write_bytes(b"")  # a whiteout: no content
    (layer / "d" / ".wh..wh..opq").write_bytes(b"")  # an opaque marker: no content
    assert layer_size(str(layer)) == 1000 + 12
    report = analyze([str(layer)], ["RUN"])
    [only] = report.layers
    assert only.size == report.total == 1012
    assert sorted(c.path for c in only.changes if c.kind == "added") == [
        "d/data", "d/data-link", "empty", "fifo", "link"
    ]  # fmt: skip


def test_a_layer_of_symlinks_is_not_empty(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    for i in range(268):
        (layer / f"applet{i}").symlink_to("busybox")
    report = analyze([str(layer)], ["RUN busybox --install -s"])
    assert (report.layers[0].count("added"), report.layers[0].size) == (268, 268 * len("busybox"))
    assert layer_size(str(layer)) == report.total
