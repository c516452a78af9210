"""Our mount against kernel overlayfs over the same layers: the merged views must be identical."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fs.conftest import Mounter
from tests.support import (
    build_three_layers,
    copy_layers,
    kept_times,
    kernel_overlay,
    snapshot,
    to_kernel_form,
    upper_snapshot,
    write,
)

pytestmark = pytest.mark.oracle


@pytest.fixture
def layers(tmp_path: Path) -> list[Path]:
    return build_three_layers(tmp_path / "layers")


@pytest.fixture
def kernel_layers(tmp_path: Path, layers: list[Path]) -> list[Path]:
    (tmp_path / "klayers").mkdir()
    copies = copy_layers(layers, tmp_path / "klayers")
    for copy in copies:
        to_kernel_form(copy)
    return copies


@pytest.fixture
def oracle(tmp_path: Path, kernel_layers: list[Path]) -> Iterator[Callable[..., object]]:
    def mount(name: str, upper: Path | None = None, work: Path | None = None) -> object:
        return kernel_overlay(tmp_path / name, kernel_layers, upper, work)

    if os.geteuid() != 0:
        pytest.skip("kernel overlayfs needs root to mount: the differential tests compare against it")
    yield mount


def test_merged_view_matches_kernel_overlayfs(mounter: Mounter, layers: list[Path], oracle) -> None:
    ours = mounter(layers)
    try:
        with oracle("kmnt") as kernel:
            expected = snapshot(kernel)
    except OSError as exc:
        pytest.skip(str(exc))
    got = snapshot(ours.mountpoint)
    assert got == expected
    # the forms were all exercised: a sample of what must and must not show
    assert "a" not in got and "b" not in got and "keep/k" not in got and "d5/deep" not in got
    assert got["c"][-1] == expected["c"][-1] and "d1/old" not in got and "d1/new" in got
    assert got["abs"][-1] == "/etc/passwd" and got["etc"][-1] == "/etc"
    assert "etc/passwd" not in got  # a symlink in a layer is shown, never followed


def change_script(root: Path) -> None:
    """The changes a container makes to its image: the same calls on both mounts."""
    with open(root / "c", "a") as f:  # append to a lower file
        f.write("appended\n")
    (root / "rel").unlink()  # delete lower files and a symlink
    (root / "d1" / "new").unlink()
    (root / "script.sh").unlink()
    shutil.rmtree(root / "d6")  # a whole lower tree
    (root / "d6").mkdir()  # mkdir where a lower dir was deleted: opaque
    write(root / "d6" / "fresh", "new in an opaque dir\n")
    os.rename(root / "d2" / "new", root / "d4" / "moved")  # across layers
    os.rename(root / "noted", root / "d5" / "noted")  # keeps its xattr
    os.rename(root / "d5" / "mid", root / "d1" / "old-name-free")
    os.rename(root / "owned", root / "secret")  # replace a lower file
    os.chmod(root / "suid", 0o755)
    os.chmod(root / "d3", 0o700)
    os.utime(root / "d4" / "new", ns=(1_000_000_000, 2_000_000_000))
    os.truncate(root / "shadowdir", 4)
    with open(root / "shadowfile" / "inside", "r+") as f:
        f.truncate(0)
    os.mkdir(root / "newdir", 0o750)
    write(root / "newdir" / "sub" / "file", "deep new\n")
    os.symlink("../c", root / "newdir" / "link")
    os.rmdir(root / "empty")  # an empty lower dir
    os.mkdir(root / "d3" / "brief")
    os.rmdir(root / "d3" / "brief")  # an upper-only dir: no whiteout needed
    os.unlink(root / "keep" / "again")  # a top-layer file in a dir that hides what is below


def test_changes_match_kernel_overlayfs_and_survive_remount(
    mounter: Mounter, layers: list[Path], oracle, tmp_path: Path
) -> None:
    upper, work = tmp_path / "upper", tmp_path / "work"
    kupper, kwork = tmp_path / "kupper", tmp_path / "kwork"
    for d in (upper, work, kupper, kwork):
        d.mkdir()
    ours = mounter(layers, upper, work)
    try:
        kernel_cm = oracle("kmnt", kupper, kwork)
        kernel = kernel_cm.__enter__()  # type: ignore[attr-defined]
    except OSError as exc:
        pytest.skip(str(exc))
    try:
        errors = []
        started = time.time_ns()
        for root in (ours.mountpoint, kernel):
            try:
                change_script(root)
            except OSError as exc:
                errors.append(exc)
        assert not errors
        expected = snapshot(kernel)
        expected_times = kept_times(kernel, started)
    finally:
        kernel_cm.__exit__(None, None, None)  # type: ignore[attr-defined]
    assert snapshot(ours.mountpoint) == expected
    assert kept_times(ours.mountpoint, started) == expected_times
    assert expected_times["d4/new"] == 2_000_000_000 and "noted" not in expected_times
    # the upper holds only what overlayfs semantics require: the same entries the kernel wrote
    assert upper_snapshot(upper) == upper_snapshot(kupper)
    ours.remount()
    assert snapshot(ours.mountpoint) == expected
    assert kept_times(ours.mountpoint, started) == expected_times


def test_rw_mount_without_changes_shows_the_lower_view(
    mounter: Mounter, layers: list[Path], oracle, tmp_path: Path
) -> None:
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    ours = mounter(layers, upper, work)
    try:
        with oracle("kmnt") as kernel:
            expected = snapshot(kernel)
    except OSError as exc:
        pytest.skip(str(exc))
    assert snapshot(ours.mountpoint) == expected
    assert os.listdir(upper) == []  # reading copies nothing up
