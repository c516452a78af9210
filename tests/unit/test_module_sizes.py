"""No module of either package over 600 lines, and unionfs's FUSE translation (ops.py) at most 400 (ARCHITECTURE:
modules small and named for what they own; ops.py translates requests and nothing else)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIMIT = 600
OPS_LIMIT = 400


def test_no_package_module_is_over_the_limit() -> None:
    sizes = {
        p.relative_to(REPO).as_posix(): len(p.read_text().splitlines())
        for package in ("imagebuild", "unionfs")
        for p in (REPO / package).rglob("*.py")
    }
    assert {path: n for path, n in sizes.items() if n > LIMIT} == {}
    assert sizes["unionfs/ops.py"] <= OPS_LIMIT
