"""Layer mtimes: the directory a store mounts and the tar it ships carry the same times, and `check`'s comparison
of the two (imagebuild.layer.verify) finds exactly what differs."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from imagebuild.layer import settle_mtimes, write_layer_tar
from imagebuild.layer.tar import tar_mtime
from imagebuild.layer.verify import Entry, differences, directory_entries, tar_entries
from tests.unit.test_layer_tar import extract, make_tree, needs_root, rich_spec, tar_bytes

NS = 1_000_000_000


def mtimes(root: Path) -> dict[str, int]:
    """Every entry below `root` (not the root itself) -> its mtime in ns, symlinks themselves."""
    found: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = os.lstat(path).st_mtime_ns
    return found


def tree(tmp_path: Path) -> Path:
    layer = tmp_path / "layer"
    (layer / "app" / "sub").mkdir(parents=True)
    (layer / "app" / "old.py").write_text("old\n")
    (layer / "app" / "sub" / "new.py").write_text("new\n")
    os.symlink("old.py", layer / "app" / "link")
    os.utime(layer / "app" / "old.py", ns=(0, 500_000 * NS + 123_456_789))
    os.utime(layer / "app" / "sub" / "new.py", ns=(0, 2_000_000 * NS + 999_999_999))
    os.utime(layer / "app" / "link", ns=(0, 1_500_000 * NS + 1), follow_symlinks=False)
    os.utime(layer / "app" / "sub", ns=(0, 700_000 * NS + 5))
    os.utime(layer / "app", ns=(0, 3_000_000 * NS + 7))
    return layer


def test_tar_mtime_keeps_whole_seconds_and_clamps_only_what_is_newer() -> None:
    assert tar_mtime(500_000 * NS + 999_999_999, None) == 500_000
    assert tar_mtime(500_000 * NS, 1_000_000) == 500_000  # older than the epoch: kept
    assert tar_mtime(2_000_000 * NS, 1_000_000) == 1_000_000  # newer: the epoch
    assert tar_mtime(-NS // 2, None) == -1  # before 1970: floor, as the tar writes it


def test_settled_directory_tar_and_extraction_agree_to_the_nanosecond(tmp_path: Path) -> None:
    layer = tree(tmp_path)
    settle_mtimes(str(layer), None)
    assert mtimes(layer) == {
        "app": 3_000_000 * NS,
        "app/sub": 700_000 * NS,
        "app/old.py": 500_000 * NS,
        "app/link": 1_500_000 * NS,
        "app/sub/new.py": 2_000_000 * NS,
    }
    data = tar_bytes(layer)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert {m.name.rstrip("/"): m.mtime for m in tar.getmembers()} == {
            name: ns // NS for name, ns in mtimes(layer).items()
        }
        assert not any("mtime" in m.pax_headers for m in tar.getmembers())  # whole seconds, the ustar field
    assert mtimes(extract(data, tmp_path / "extracted")) == mtimes(layer)


def test_settle_with_an_epoch_clamps_newer_mtimes_only_and_the_symlink_itself(tmp_path: Path) -> None:
    layer = tree(tmp_path)
    target_before = os.stat(layer / "app" / "old.py").st_mtime_ns
    settle_mtimes(str(layer), 1_000_000)
    assert mtimes(layer) == {
        "app": 1_000_000 * NS,
        "app/sub": 700_000 * NS,
        "app/old.py": 500_000 * NS,
        "app/link": 1_000_000 * NS,
        "app/sub/new.py": 1_000_000 * NS,
    }
    assert os.stat(layer / "app" / "old.py").st_mtime_ns == target_before // NS * NS
    data = tar_bytes(layer, clamp=1_000_000)
    assert mtimes(extract(data, tmp_path / "extracted")) == mtimes(layer)


def test_check_finds_no_difference_in_a_settled_layer_and_names_a_changed_mtime(tmp_path: Path) -> None:
    layer = tree(tmp_path)
    settle_mtimes(str(layer), None)
    tar = tar_entries(io.BytesIO(tar_bytes(layer)))
    assert differences(directory_entries(str(layer)), tar) == []
    os.utime(layer / "app" / "sub" / "new.py", ns=(0, 2_000_000 * NS + 5))
    (found,) = differences(directory_entries(str(layer)), tar)
    assert found == "app/sub/new.py: mtime 1970-01-24T03:33:20.000000005Z here, 1970-01-24T03:33:20Z in the tar"


def test_an_unsettled_layer_differs_from_its_tar(tmp_path: Path) -> None:
    """What the store held before: real sub-second times in the directory, whole (or clamped) ones in the tar."""
    layer = tree(tmp_path)
    out = io.BytesIO()
    write_layer_tar(str(layer), out, mtime_clamp=0)
    found = differences(directory_entries(str(layer)), tar_entries(io.BytesIO(out.getvalue())))
    assert [line.split(":")[0] for line in found] == ["app", "app/link", "app/old.py", "app/sub", "app/sub/new.py"]


@needs_root
@pytest.mark.parametrize("form", ["chardev", "file"])
def test_every_kind_of_entry_extracted_agrees_with_its_tar(tmp_path: Path, form: str) -> None:
    data = tar_bytes(make_tree(tmp_path / "src", rich_spec("chardev")))
    out = extract(data, tmp_path / "out", form)  # type: ignore[arg-type]
    assert differences(directory_entries(str(out)), tar_entries(io.BytesIO(data))) == []


def test_foreign_tar_names_whiteouts_links_duplicates_and_implicit_parents_are_read_as_extraction_does() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **fields: object) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mtime, info.mode = kind, len(data), 1000.5, 0o644
            for key, value in fields.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if data else None)

        add("./a/b/file", data=b"one")
        add("./a/b/file", data=b"second")  # the last wins
        add("a/b/hard", tarfile.LNKTYPE, linkname="a/b/file")
        add("a/gone", tarfile.CHRTYPE, devmajor=0, devminor=0)
        add("a/.wh.other")
        add("a/opq/.wh..wh..opq")
    entries = tar_entries(io.BytesIO(out.getvalue()))
    file = Entry("file", 0o644, 0, 0, 1000 * NS + NS // 2, 6)
    assert entries == {
        "a/b/file": file,
        "a/b/hard": file,
        "a/.wh.gone": Entry("whiteout"),
        "a/.wh.other": Entry("whiteout"),
        "a/opq/.wh..wh..opq": Entry("opaque marker"),
    }
    directory = {**entries, "a": Entry("directory", 0o755), "a/b": Entry("directory", 0o755)}
    assert differences(directory, entries) == []  # parents extraction made for the tar's entries
    assert differences({**directory, "x": Entry("directory")}, entries) == ["x: only in the directory"]
