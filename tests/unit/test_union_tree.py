"""Union resolution without a mount: layers in tmp_path read through Layer, and a fake layer through the same
LayerSource interface (unionfs/tree.py, unionfs/layers.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import write
from unionfs.layers import DirView, Layer, LayerSource
from unionfs.tree import Tree
from unionfs.whiteout import OPAQUE_MARKER, USER_OPAQUE


@pytest.fixture
def opened() -> Iterator[list[Layer]]:
    layers: list[Layer] = []
    yield layers
    for layer in layers:
        layer.close()


def tree_of(dirs: list[Path], opened: list[Layer], upper: bool = False) -> Tree:
    for index, path in enumerate(dirs):
        opened.append(Layer(str(path), index, writable=upper and index == 0))
    return Tree(opened)


def names(tree: Tree, *path: str) -> list[str]:
    node = tree.resolve(path)
    assert node is not None
    return [child.name for child in tree.children(node)]


def test_the_top_layer_wins_and_directories_merge(tmp_path: Path, opened: list[Layer]) -> None:
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    write(top / "etc" / "conf", "top\n")
    write(bottom / "etc" / "conf", "bottom\n")
    write(bottom / "etc" / "only-below", "x")
    write(top / "only-top", "y")
    tree = tree_of([top, bottom], opened)
    conf = tree.resolve(("etc", "conf"))
    assert conf is not None and conf.layer == 0
    etc = tree.resolve(("etc",))
    assert etc is not None and etc.layers == (0, 1)
    assert names(tree, "etc") == ["conf", "only-below"]
    assert names(tree) == ["etc", "only-top"]


def test_whiteout_files_hide_names_below_and_never_show(tmp_path: Path, opened: list[Layer]) -> None:
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    write(bottom / "gone", "x")
    write(bottom / "dir" / "f", "x")
    write(bottom / "kept", "x")
    write(top / ".wh.gone", "")
    write(top / ".wh.dir", "")
    tree = tree_of([top, bottom], opened)
    assert tree.resolve(("gone",)) is None
    assert tree.resolve(("dir", "f")) is None
    assert tree.resolve((".wh.gone",)) is None
    assert names(tree) == ["kept"]


@pytest.mark.skipif(os.geteuid() != 0, reason="a 0/0 character device needs mknod")
def test_chardev_whiteouts_hide_names_below(tmp_path: Path, opened: list[Layer]) -> None:
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    write(bottom / "gone", "x")
    top.mkdir()
    os.mknod(top / "gone", stat.S_IFCHR, 0)
    tree = tree_of([top, bottom], opened)
    assert tree.resolve(("gone",)) is None
    assert names(tree) == []


@pytest.mark.parametrize("form", ["marker", "xattr"])
def test_an_opaque_directory_hides_everything_below_it(tmp_path: Path, opened: list[Layer], form: str) -> None:
    top, middle, bottom = tmp_path / "top", tmp_path / "middle", tmp_path / "bottom"
    write(top / "d" / "new", "x")
    write(middle / "d" / "mid", "x")
    write(bottom / "d" / "old", "x")
    if form == "marker":
        write(middle / "d" / OPAQUE_MARKER, "")
    else:
        os.setxattr(middle / "d", USER_OPAQUE, b"y")
    tree = tree_of([top, middle, bottom], opened)
    d = tree.resolve(("d",))
    assert d is not None and d.layers == (0, 1)
    assert names(tree, "d") == ["mid", "new"]
    assert tree.resolve(("d", "old")) is None


def test_a_file_hides_a_directory_below_and_the_other_way_round(tmp_path: Path, opened: list[Layer]) -> None:
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    write(top / "was-dir", "now a file")
    write(bottom / "was-dir" / "inside", "x")
    write(top / "was-file" / "inside", "x")
    write(bottom / "was-file", "a file")
    tree = tree_of([top, bottom], opened)
    assert tree.resolve(("was-dir", "inside")) is None
    node = tree.resolve(("was-file",))
    assert node is not None and node.is_dir and node.layers == (0,)


def test_a_symlink_in_a_layer_is_never_followed(tmp_path: Path, opened: list[Layer]) -> None:
    layer, outside = tmp_path / "layer", tmp_path / "outside"
    write(outside / "secret", "host file")
    layer.mkdir()
    os.symlink(str(outside), layer / "etc")
    tree = tree_of([layer], opened)
    assert tree.resolve(("etc", "secret")) is None
    link = tree.resolve(("etc",))
    assert link is not None and stat.S_ISLNK(link.st.st_mode)
    assert opened[0].readlink(("etc",)) == str(outside)


class FakeLayer:
    """A layer that is no directory: entries in a dict, as a remote layer might serve them."""

    def __init__(self, index: int, files: dict[str, bytes], whiteouts: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.index = index
        self.writable = False
        self.fetcher = None
        self.files = files
        self.whiteouts = whiteouts

    def _st(self, mode: int, size: int) -> os.stat_result:
        return os.stat_result((mode, 1, 0, 1, 1000 + self.index, 0, size, 0, 0, 0))

    def view(self, path: tuple[str, ...]) -> DirView | None:
        prefix = "/".join(path)
        entries: dict[str, os.stat_result] = {}
        for name, data in self.files.items():
            parts = name.split("/")
            if parts[: len(path)] != list(path) or len(parts) == len(path):
                continue
            child = parts[len(path)]
            is_dir = len(parts) > len(path) + 1
            entries[child] = self._st(stat.S_IFDIR | 0o755 if is_dir else stat.S_IFREG | 0o644, len(data))
        if path and not entries and prefix not in self.files:
            return None
        gone = {w.split("/")[-1] for w in self.whiteouts if w.split("/")[:-1] == list(path)}
        return DirView(entries, gone, False)

    def root_stat(self) -> os.stat_result:
        return self._st(stat.S_IFDIR | 0o755, 0)

    def readlink(self, path: tuple[str, ...]) -> str:
        raise OSError(22, "not a link")

    def open_file(self, path: tuple[str, ...], flags: int = os.O_RDONLY) -> int:
        read, written = os.pipe()
        os.write(written, self.files["/".join(path)])
        os.close(written)
        return read

    def getxattr(self, path: tuple[str, ...], name: str) -> bytes:
        raise OSError(61, "no data")

    def listxattr(self, path: tuple[str, ...]) -> list[str]:
        return []

    def xattrs(self, path: tuple[str, ...]) -> dict[str, bytes]:
        return {}

    def is_metacopy(self, path: tuple[str, ...], st: os.stat_result) -> bool:
        return False

    def statvfs(self) -> os.statvfs_result:
        return os.statvfs("/")

    def hard_links(self, ino: int) -> list[tuple[str, ...]]:
        return []

    def open_dir(self, path: tuple[str, ...]) -> int:
        raise OSError(95, "no directory fds here")

    def end_request(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_fake_layer_serves_the_same_resolution() -> None:
    top: LayerSource = FakeLayer(0, {"etc/hosts": b"top", "bin/sh": b"sh"}, whiteouts={"etc/motd"})
    bottom: LayerSource = FakeLayer(1, {"etc/hosts": b"bottom", "etc/motd": b"hello", "etc/passwd": b"root"})
    tree = Tree([top, bottom])
    hosts = tree.resolve(("etc", "hosts"))
    assert hosts is not None and hosts.layer == 0 and hosts.st.st_uid == 1000
    assert tree.resolve(("etc", "motd")) is None
    etc = tree.resolve(("etc",))
    assert etc is not None and etc.layers == (0, 1)
    assert [child.name for child in tree.children(etc)] == ["hosts", "passwd"]
    passwd = tree.resolve(("etc", "passwd"))
    assert passwd is not None and passwd.layer == 1
    fd = bottom.open_file(passwd.path)
    try:
        assert os.read(fd, 100) == b"root"
    finally:
        os.close(fd)
