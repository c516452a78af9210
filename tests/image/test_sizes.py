"""One definition of size: images, history, inspect, the build summary and analyze show the same numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from imagebuild.analyze import human
from tests.image.conftest import Tool, dockerfile

DOCKERFILE = """FROM busybox
RUN mkdir /links && for i in $(seq 1 40); do ln -s /bin/busybox /links/l$i; done
RUN dd if=/dev/zero of=/big bs=1k count=300 2>/dev/null && ln /big /big-link && touch /empty1 /empty2
COPY data /a
COPY data /b
RUN rm /big /big-link && echo changed > /a
COPY data /c
"""


def test_every_command_shows_the_same_sizes(tool: Tool, ctx: Path) -> None:
    (ctx / "data").write_text("d" * 70000)
    dockerfile(ctx, DOCKERFILE)
    built = tool.build(ctx, "-t", "sizes", "--no-cache")
    report = json.loads(tool.run("analyze", "sizes", "--format", "json").stdout)
    total, wasted = report["total_bytes"], report["wasted_bytes"]
    layers = report["layers"]
    assert total == sum(layer["size"] for layer in layers)
    # the busybox base's `busybox --install -s` layer: symlinks, each an entry of its target's length
    installed = layers[1]
    assert installed["added"] > 200 and installed["size"] == installed["added"] * len("/bin/busybox")
    links = layers[-6]
    assert (links["added"], links["size"]) == (40, 40 * len("/bin/busybox"))  # a layer of symlinks counts them
    big = layers[-5]
    assert (big["added"], big["size"]) == (4, 300 * 1024)  # a hard link counts its data once, empty files count
    # the build summary and analyze: one computation, so one efficiency and one waste (duplicates included)
    assert wasted == 300 * 1024 + 70000 + 70000  # /big deleted, /a overwritten, /c a duplicate of /b
    summary = next(line for line in built.stdout.splitlines() if line.startswith("Efficiency:"))
    assert summary.startswith(f"Efficiency: {report['efficiency']:.1%}, {human(wasted)} of {human(total)} wasted")
    text = tool.run("analyze", "sizes").stdout
    assert f"Efficiency: {report['efficiency'] * 100:.1f}%  (wasted {human(wasted)} of {human(total)})" in text
    # images, inspect and history: the same uncompressed content size
    assert tool.inspect("sizes")["Size"] == total
    assert 0 < tool.inspect("sizes")["CompressedSize"] < total  # type: ignore[operator]
    row = next(line for line in tool.run("images").stdout.splitlines() if line.startswith("sizes "))
    assert row.split()[-1] == human(total)
    history = tool.run("history", "sizes").stdout.splitlines()[1:]
    shown = [line[61:71].strip() for line in reversed(history) if not re.match(r"(ENV|CMD) ", line)]
    assert shown == [human(layer["size"]) for layer in layers]
