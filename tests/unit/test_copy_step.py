"""A COPY step end to end without FUSE: layer directories read through unionfs's resolution, a layer written."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from imagebuild.builder.copydest import CopyError
from imagebuild.builder.copysource import ContextTree
from imagebuild.builder.copystep import CopyRequest, SourceSide, run
from imagebuild.builder.layerview import LayersView
from imagebuild.context import load

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the image's owners are made with chown: run as root")


def meta(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@pytest.fixture
def image(tmp_path: Path) -> list[str]:
    """Two layers, top first: the top one hides /gone with a whiteout."""
    low = tmp_path / "low"
    for d in ("opt/existing/sub", "etc", "real", "gone"):
        (low / d).mkdir(parents=True)
    os.chmod(low / "opt" / "existing", 0o750)
    os.chown(low / "opt" / "existing", 5, 6)
    (low / "etc" / "passwd").write_text("app:x:1000:100::/home/app:/bin/sh\n")
    (low / "link").symlink_to("/real")
    top = tmp_path / "top"
    top.mkdir()
    os.mknod(top / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    return [str(top), str(low)]


@pytest.fixture
def context(tmp_path: Path) -> ContextTree:
    ctx = tmp_path / "ctx"
    (ctx / "dir" / "sub").mkdir(parents=True)
    (ctx / "f.txt").write_text("f\n")
    (ctx / "dir" / "a.txt").write_text("a\n")
    (ctx / "dir" / "sub" / "s.txt").write_text("s\n")
    return ContextTree(load(str(ctx)))


def copy(lowers: list[str], context: ContextTree, layer: Path, *words: str, **flags: str) -> Path:
    layer.mkdir()
    request = CopyRequest("COPY", list(words[:-1]), words[-1], flags.pop("workdir", "/"), **flags)
    with LayersView(lowers) as view:
        run(request, view, SourceSide(context, "the build context"), str(layer))
    return layer


def test_existing_directories_keep_their_metadata(image: list[str], context: ContextTree, tmp_path: Path) -> None:
    layer = copy(image, context, tmp_path / "layer", "dir/", "/opt/existing/")
    assert meta(layer / "opt" / "existing") == (5, 6, 0o750)
    assert meta(layer / "opt" / "existing" / "sub") == (0, 0, 0o755)  # copied: the source's metadata
    assert (layer / "opt" / "existing" / "sub" / "s.txt").read_text() == "s\n"
    assert sorted(os.listdir(layer / "opt" / "existing")) == ["a.txt", "sub"]


def test_chown_by_name_through_a_symlinked_directory(image: list[str], context: ContextTree, tmp_path: Path) -> None:
    layer = copy(image, context, tmp_path / "layer", "f.txt", "/link/new/", chown="app")
    assert meta(layer / "real" / "new") == (1000, 100, 0o755)  # made by the copy: --chown's
    assert meta(layer / "real" / "new" / "f.txt") == (1000, 100, 0o644)
    assert not os.path.lexists(layer / "link")  # the image's link is left alone


def test_a_whited_out_directory_is_not_there(image: list[str], context: ContextTree, tmp_path: Path) -> None:
    layer = copy(image, context, tmp_path / "layer", "f.txt", "/gone")
    assert (layer / "gone").is_file()  # no directory /gone in the image: the file is written at the path
    layer = copy(image, context, tmp_path / "layer2", "f.txt", "/real")
    assert (layer / "real" / "f.txt").is_file()  # a directory in the image: into it


def test_workdir_and_chmod(image: list[str], context: ContextTree, tmp_path: Path) -> None:
    layer = copy(image, context, tmp_path / "layer", "dir", "sub", workdir="/new/wd", chmod="0640")
    assert meta(layer / "new") == meta(layer / "new" / "wd") == meta(layer / "new" / "wd" / "sub") == (0, 0, 0o755)
    assert meta(layer / "new" / "wd" / "sub" / "sub") == (0, 0, 0o640)  # a directory the copy copies
    assert meta(layer / "new" / "wd" / "sub" / "a.txt") == (0, 0, 0o640)


def test_errors(image: list[str], context: ContextTree, tmp_path: Path) -> None:
    with pytest.raises(CopyError, match="When using COPY with more than one source file"):
        copy(image, context, tmp_path / "layer", "f.txt", "dir", "/nodir")
    with pytest.raises(CopyError, match="no user 'nobody'"):
        copy(image, context, tmp_path / "layer2", "f.txt", "/x", chown="nobody")
    with pytest.raises(CopyError, match="/etc/passwd is not a directory"):
        copy(image, context, tmp_path / "layer3", "f.txt", "/etc/passwd/x")
