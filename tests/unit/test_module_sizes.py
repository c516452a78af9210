"""No module of imagebuild over 600 lines (ARCHITECTURE: modules small and named for what they own)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIMIT = 600


def test_no_imagebuild_module_is_over_the_limit() -> None:
    sizes = {
        p.relative_to(REPO).as_posix(): len(p.read_text().splitlines()) for p in (REPO / "imagebuild").rglob("*.py")
    }
    assert {path: n for path, n in sizes.items() if n > LIMIT} == {}
