"""One definition of the whiteout and opaque forms (unionfs.whiteout), read the same way by the filesystem, the
layer tar writer and reader, and `imagebuild analyze`: OCI's meaning, where `.wh..wh..opq` marks an opaque
directory and every other `.wh..wh.*` name is reserved (neither a whiteout nor content)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import unionfs
from imagebuild import analyze
from imagebuild.layer import whiteouts as wh
from unionfs import whiteout


@pytest.mark.parametrize(
    ("name", "target"),
    [
        (".wh.gone", "gone"),
        (".wh..hidden", ".hidden"),
        (".wh..wh..opq", None),  # the opaque marker
        (".wh..wh.plnk", None),  # reserved (aufs's hard-link directory)
        (".wh..wh.aufs", None),
        (".wh.", None),
        ("plain", None),
        ("x.wh.y", None),
    ],
)
def test_a_whiteout_file_hides_its_target_and_reserved_names_hide_nothing(name: str, target: str | None) -> None:
    assert whiteout.whited_out_target(name) == target
    assert whiteout.is_reserved_name(name) == name.startswith(".wh.")
    assert whiteout.is_meta_name(name) == name.startswith(".wh..wh.")
    if target is not None:
        assert whiteout.whiteout_name(target) == name


def test_imagebuild_uses_the_filesystems_definitions() -> None:
    for name in wh.__all__:
        if hasattr(whiteout, name):
            assert getattr(wh, name) is getattr(whiteout, name), name
    assert wh.whited_out_target is whiteout.whited_out_target and unionfs.is_opaque_dir is whiteout.is_opaque_dir


def test_internal_xattrs_are_a_subset_of_those_kept_out_of_layers() -> None:
    for name in ("user.overlay.opaque", "trusted.overlay.redirect", "user.containers.override_stat"):
        assert whiteout.is_internal_xattr(name) and wh.is_kept_out(name)
    assert wh.is_kept_out("security.selinux") and not whiteout.is_internal_xattr("security.selinux")
    assert not wh.is_kept_out("user.mime_type") and not wh.is_kept_out("security.capability")


def test_a_directory_is_opaque_by_marker_or_by_xattr(tmp_path: Path) -> None:
    plain, marked, flagged, no = (tmp_path / n for n in ("plain", "marked", "flagged", "no"))
    for d in (plain, marked, flagged, no):
        d.mkdir()
    (marked / ".wh..wh..opq").write_bytes(b"")
    (plain / ".wh..wh.plnk").mkdir()  # reserved: not a marker
    try:
        os.setxattr(flagged, "user.overlay.opaque", b"y")
        os.setxattr(no, "user.overlay.opaque", b"n")
    except OSError as exc:
        pytest.skip(f"user xattrs unsupported in {tmp_path}: {exc}")
    for d, opaque in ((plain, False), (marked, True), (flagged, True), (no, False)):
        assert whiteout.is_opaque_dir(str(d)) is opaque, d
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert whiteout.is_opaque_dir(fd) is opaque, d
        finally:
            os.close(fd)
    assert whiteout.is_opaque_xattrs({"user.fuseoverlayfs.opaque": b"y"})
    assert not whiteout.is_opaque_xattrs({"user.fuseoverlayfs.opaque": b"n", "user.other": b"y"})


def test_analyze_reads_reserved_names_as_neither_whiteouts_nor_files(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "d").mkdir(parents=True)
    (layer / ".wh.gone").write_bytes(b"")
    (layer / ".wh..wh.orph").write_bytes(b"")  # reserved (aufs): hides no `.wh.orph`
    (layer / "d" / ".wh..wh..opq").write_bytes(b"")
    (layer / "d" / "kept").write_bytes(b"data")
    files, whiteouts, opaque = analyze._scan(str(layer), content=False)
    assert sorted(files) == ["d/kept"]
    assert whiteouts == ["gone"]
    assert opaque == ["d"]
