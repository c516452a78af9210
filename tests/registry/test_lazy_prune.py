"""`imagebuild prune` and `imagebuild check` on STORE/lazy, with a real registry and real lazy mounts: prune keeps
what a running lazy mount uses and removes the skeletons, TOCs, specs and leftovers nothing uses once it is gone;
check names a cached file whose data does not match its name, which --repair removes."""

from __future__ import annotations

import re
from pathlib import Path

from imagebuild.lazy.prune import problems
from tests.image.conftest import Tool
from tests.registry.test_lazy import fresh, lazy_mount, mounts, pushed  # noqa: F401 (fixtures)
from tests.support import is_mounted


def lazy_lines(store: Tool) -> list[str]:
    """What `imagebuild check` says of STORE/lazy but its leftovers (check's other lines may be of other work on
    the machine: a shared /tmp)."""
    said = store.run("check", check=False).stdout.splitlines()
    return [line for line in said if line.startswith("lazy ")]


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def test_prune_keeps_what_a_lazy_mount_uses_and_removes_the_rest_after(
    fresh: Tool,  # noqa: F811
    pushed: str,  # noqa: F811
    tmp_path: Path,
    mounts: list[Path],  # noqa: F811
) -> None:
    lazy = fresh.root / "lazy"
    root = lazy_mount(fresh, pushed, tmp_path / "mnt", mounts, "--read-only")
    assert (root / "data" / "small.txt").read_text() == "hello\n"
    skeletons, tocs, specs = listing(lazy / "layers"), listing(lazy / "tocs"), listing(lazy / "specs")
    assert skeletons and tocs and specs
    (lazy / "files" / ".tmp-interrupted").write_bytes(b"half a file")

    fresh.run("prune")  # a running lazy mount keeps all it uses, and a temporary file may be its fetch
    assert (listing(lazy / "layers"), listing(lazy / "tocs"), listing(lazy / "specs")) == (skeletons, tocs, specs)
    assert (lazy / "files" / ".tmp-interrupted").exists()
    assert (root / "data" / "other.txt").read_text() == "other\n"  # fetched after the prune
    assert lazy_lines(fresh) == []

    fresh.run("umount", str(root))
    assert not is_mounted(root)
    done = fresh.run("prune")
    assert re.search(rf"Deleted {len(skeletons)} lazy layer skeletons and \d+ lazy mount files", done.stdout), (
        done.stdout
    )
    assert listing(lazy / "layers") == listing(lazy / "tocs") == listing(lazy / "specs") == []
    assert not (lazy / "files" / ".tmp-interrupted").exists()
    assert listing(lazy / "files")  # fetched files stay, up to the cache's limit
    lowered = fresh.run("prune", env={"IMAGEBUILD_LAZY_CACHE_SIZE": "0"})  # a limit lowered since: applied
    assert "of lazily fetched files beyond the cache's limit" in lowered.stdout, lowered.stdout
    assert listing(lazy / "files") == []

    again = lazy_mount(fresh, pushed, tmp_path / "again", mounts, "--read-only")
    assert (again / "data" / "small.txt").read_text() == "hello\n"


def test_check_names_a_cached_file_that_does_not_match_its_name(
    fresh: Tool,  # noqa: F811
    pushed: str,  # noqa: F811
) -> None:
    assert fresh.run("run", "--rm", "--lazy", "--insecure", pushed, "cat", "/data/small.txt").stdout == "hello\n"
    files = fresh.root / "lazy" / "files"
    cached = next(p for p in sorted(files.iterdir()) if re.fullmatch("[0-9a-f]{64}", p.name))
    cached.write_bytes(b"not what it was\n")
    assert lazy_lines(fresh) == [f"lazy cache file {cached}: its data does not match its name"]
    assert fresh.run("check", check=False).returncode == 1
    # what check --repair does of it (not run here: it would clear other work's leftovers in the shared /tmp)
    assert problems(str(fresh.root / "lazy"), repair=True) == [
        f"lazy cache file {cached}: its data does not match its name (removed)"
    ]
    assert not cached.exists()
    assert lazy_lines(fresh) == []
    assert fresh.run("run", "--rm", "--lazy", "--insecure", pushed, "cat", "/data/small.txt").stdout == "hello\n"
