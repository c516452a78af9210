"""Image efficiency: what each layer adds, changes and removes, and the bytes a user ships for nothing.

Layers are read-only, so deleting or overwriting a file in a later layer does not shrink the image: the old
bytes still travel in the layer that added them. Those bytes are wasted, and so are copies of one content
kept in several layers. Efficiency is the share of the layers' file bytes that are not wasted.
Pure over layer directories: no mounts.

Size has one definition, used by `images`, `history`, `inspect`, the build summary and `analyze` alike: a
layer's size is its uncompressed content as docker counts it, the sum of the sizes of its entries other than
directories and whiteouts, where a file counts its data, a symlink the length of its target, and a file with
several hard links its data once (the other names count 0, as in a tar). Every such entry, empty or not, is a
change the layer makes; an image's size is the sum of its layers' sizes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

import xxhash

from imagebuild.layer.whiteouts import OPAQUE_MARKER, is_opaque_dir, is_reserved_name, whited_out_target


@dataclass
class Change:
    path: str
    kind: str  # "added", "changed", "removed"
    size: int


@dataclass
class LayerReport:
    index: int
    instruction: str
    size: int  # the layer's content size (see the module docstring)
    changes: list[Change] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)


@dataclass
class Waste:
    path: str
    size: int
    added_in: int
    dropped_in: int  # the layer that deleted or overwrote it; -1 for duplicates
    why: str  # "deleted", "overwritten", "duplicate of PATH"


@dataclass
class Report:
    layers: list[LayerReport]
    waste: list[Waste]
    largest: list[tuple[str, int]]

    @property
    def total(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def wasted(self) -> int:
        return sum(w.size for w in self.waste)

    @property
    def efficiency(self) -> float:
        return 1.0 if self.total == 0 else (self.total - self.wasted) / self.total

    def to_dict(self) -> dict[str, Any]:
        return {
            "efficiency": round(self.efficiency, 6),
            "total_bytes": self.total,
            "wasted_bytes": self.wasted,
            "layers": [
                {
                    "index": layer.index,
                    "instruction": layer.instruction,
                    "size": layer.size,
                    "added": layer.count("added"),
                    "changed": layer.count("changed"),
                    "removed": layer.count("removed"),
                }
                for layer in self.layers
            ],
            "waste": [w.__dict__ for w in self.waste],
            "largest": [{"path": p, "size": s} for p, s in self.largest],
        }


def _scan(layer_dir: str, content: bool) -> tuple[dict[str, tuple[int, str]], list[str], list[str]]:
    """A layer's entries other than directories (path -> size, content hash of a regular file with data, else
    ""), its whiteouts and opaque directories. Sizes as the module docstring defines them."""
    files: dict[str, tuple[int, str]] = {}
    whiteouts: list[str] = []
    opaque: list[str] = []
    inodes: set[tuple[int, int]] = set()
    for dirpath, dirs, names in os.walk(layer_dir):
        dirs.sort()
        rel_dir = os.path.relpath(dirpath, layer_dir)
        rel_dir = "" if rel_dir == "." else rel_dir
        if rel_dir and is_opaque_dir(dirpath):
            opaque.append(rel_dir)
        for name in sorted(names + dirs):
            full = os.path.join(dirpath, name)
            rel = os.path.join(rel_dir, name) if rel_dir else name
            st = os.lstat(full)
            if name == OPAQUE_MARKER or stat.S_ISDIR(st.st_mode):
                continue
            if is_reserved_name(name):  # a whiteout file, or a name reserved for other tools' metadata
                target = whited_out_target(name)
                if target is not None:
                    whiteouts.append(os.path.join(rel_dir, target) if rel_dir else target)
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                whiteouts.append(rel)
            elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in inodes:
                files[rel] = (0, "")  # another name of a file counted already
            else:
                if st.st_nlink > 1:
                    inodes.add((st.st_dev, st.st_ino))
                regular = stat.S_ISREG(st.st_mode)
                files[rel] = (st.st_size, _hash(full) if content and regular and st.st_size else "")
    return files, whiteouts, opaque


def layer_size(layer_dir: str) -> int:
    """A layer's content size: the one definition every command shows (see the module docstring)."""
    files, _, _ = _scan(layer_dir, content=False)
    return sum(size for size, _ in files.values())


def _hash(path: str) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _below(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def analyze(layer_dirs: list[str], instructions: list[str]) -> Report:
    """`layer_dirs` bottom first, with the instruction that made each; the one report both `analyze` and a
    build's summary show."""
    present: dict[str, tuple[int, int, str]] = {}  # path -> (layer index, size, hash)
    reports: list[LayerReport] = []
    waste: list[Waste] = []
    for index, (layer_dir, instruction) in enumerate(zip(layer_dirs, instructions, strict=True)):
        files, whiteouts, opaque = _scan(layer_dir, content=True)
        report = LayerReport(index, instruction, sum(size for size, _ in files.values()))
        for root in opaque + whiteouts:
            for path in [p for p in present if _below(p, root)]:
                added_in, size, _ = present.pop(path)
                report.changes.append(Change(path, "removed", size))
                waste.append(Waste(path, size, added_in, index, "deleted"))
        for path, (size, digest) in sorted(files.items()):
            if path in present:
                added_in, old_size, _ = present[path]
                report.changes.append(Change(path, "changed", size))
                waste.append(Waste(path, old_size, added_in, index, "overwritten"))
            else:
                report.changes.append(Change(path, "added", size))
            present[path] = (index, size, digest)
        reports.append(report)
    by_content: dict[str, list[tuple[str, int, int]]] = {}
    for path, (index, size, digest) in present.items():
        if digest:
            by_content.setdefault(digest, []).append((path, index, size))
    for copies in by_content.values():
        if len({index for _, index, _ in copies}) > 1:
            first, *others = sorted(copies, key=lambda c: (c[1], c[0]))
            waste.extend(Waste(p, s, i, -1, f"duplicate of {first[0]}") for p, i, s in others)
    largest = sorted(((p, s) for p, (_, s, _) in present.items()), key=lambda x: (-x[1], x[0]))[:10]
    return Report(reports, waste, largest)


def human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1000
    return f"{size:.1f}GB"


def render_text(report: Report) -> str:
    lines = [f"{'LAYER':<6} {'SIZE':>9} {'ADDED':>6} {'CHANGED':>8} {'REMOVED':>8}  INSTRUCTION"]
    for layer in report.layers:
        lines.append(
            f"{layer.index:<6} {human(layer.size):>9} {layer.count('added'):>6} {layer.count('changed'):>8} "
            f"{layer.count('removed'):>8}  {layer.instruction[:70]}"
        )
    lines.append("")
    lines.append(
        f"Efficiency: {report.efficiency * 100:.1f}%  (wasted {human(report.wasted)} of {human(report.total)})"
    )
    if report.waste:
        lines.append("Wasted bytes (largest first):")
        for w in sorted(report.waste, key=lambda w: -w.size)[:20]:
            where = (
                f"added in layer {w.added_in}, {w.why} in layer {w.dropped_in}"
                if w.dropped_in >= 0
                else f"in layer {w.added_in}, {w.why}"
            )
            lines.append(f"  {human(w.size):>9}  /{w.path}  ({where})")
        lines.append(
            "Delete files in the same RUN that creates them, and copy each content once: a later layer "
            "cannot shrink an earlier one."
        )
    lines.append("Largest files:")
    lines.extend(f"  {human(size):>9}  /{path}" for path, size in report.largest)
    return "\n".join(lines)


def render_tree(layer: LayerReport) -> str:
    """A layer's changes as a tree: + added, ~ changed, - removed."""
    marks = {"added": "+", "changed": "~", "removed": "-"}
    lines, shown = [f"layer {layer.index}: {layer.instruction}"], set()
    for change in sorted(layer.changes, key=lambda c: c.path):
        parts = change.path.split("/")
        for depth in range(len(parts) - 1):
            prefix = "/".join(parts[: depth + 1])
            if prefix not in shown:
                shown.add(prefix)
                lines.append(f"{'    ' * depth}  {parts[depth]}/")
        lines.append(f"{'    ' * (len(parts) - 1)}{marks[change.kind]} {parts[-1]}  {human(change.size)}")
    return "\n".join(lines)
