"""The core's operations without a mount (unionfs/union.py, upper.py, treecopy.py, inodes.py, permissions.py):
a UnionFS built over layer directories in tmp_path, exactly as the daemon builds it, and what it leaves in the
upper. Runs where /dev/fuse is missing."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import write
from unionfs.attrs import AttrChange, Owner
from unionfs.config import MountConfig
from unionfs.filesystem import build
from unionfs.idmap import IdMap
from unionfs.inodes import ROOT_INODE, InodeTable
from unionfs.ownership import OverrideStat, replace_stat
from unionfs.permissions import EXEC, READ, WRITE, Checker
from unionfs.tree import Node
from unionfs.treecopy import TreePlan, TreePlanner
from unionfs.union import UnionFS
from unionfs.whiteout import OPAQUE_MARKER, OVERRIDE_STAT

ROOT = Owner(0, 0, 0o022)


@dataclass
class Layers:
    lower: Path
    upper: Path
    work: Path


@pytest.fixture
def layers(tmp_path: Path) -> Layers:
    lower, upper, work = tmp_path / "lower", tmp_path / "upper", tmp_path / "work"
    write(lower / "etc" / "conf", "conf\n")
    write(lower / "etc" / "motd", "hello\n")
    write(lower / "bin" / "tool", "#!/bin/sh\n", 0o755)
    os.link(lower / "bin" / "tool", lower / "bin" / "tool-alias")
    upper.mkdir()
    work.mkdir()
    return Layers(lower, upper, work)


@pytest.fixture
def union(layers: Layers) -> Iterator[UnionFS]:
    umask = os.umask(0o022)
    config = MountConfig(mountpoint="/nonexistent", lowers=[str(layers.lower)], upper=str(layers.upper))
    config.work, config.whiteout = str(layers.work), "file"  # the OCI form: no mknod needed
    fs, close = build(config)
    try:
        yield fs
    finally:
        close()
        os.umask(umask)


def at(fs: UnionFS, *path: str) -> Node:
    return fs.resolve(path)


def test_unlink_of_a_lower_file_leaves_a_whiteout(union: UnionFS, layers: Layers) -> None:
    union.unlink(at(union, "etc"), "motd")
    assert (layers.upper / "etc" / ".wh.motd").exists()
    assert (layers.lower / "etc" / "motd").exists()  # lower layers never change
    with pytest.raises(OSError) as gone:
        union.resolve(("etc", "motd"))
    assert gone.value.errno == errno.ENOENT
    assert [c.name for c in union.children(at(union, "etc"))] == ["conf"]


def test_rmdir_of_a_merged_directory_that_is_not_empty_fails(union: UnionFS) -> None:
    with pytest.raises(OSError) as refused:
        union.rmdir(at(union), "etc")
    assert refused.value.errno == errno.ENOTEMPTY


def test_mkdir_over_a_whiteout_makes_an_opaque_directory(union: UnionFS, layers: Layers) -> None:
    for name in ("conf", "motd"):
        union.unlink(at(union, "etc"), name)
    union.rmdir(at(union), "etc")
    made = union.mkdir(at(union), "etc", 0o755, ROOT)
    assert made.is_dir and made.layers == (0,)
    assert (layers.upper / "etc" / OPAQUE_MARKER).exists()
    assert union.children(made) == []


def test_a_change_of_metadata_copies_up_with_parents_first(union: UnionFS, layers: Layers) -> None:
    node = union.setattr(at(union, "etc", "conf"), AttrChange(mode=0o600))
    assert node.layer == 0 and stat.S_IMODE(node.st.st_mode) == 0o600
    assert (layers.upper / "etc" / "conf").read_text() == "conf\n"
    upper_etc = os.stat(layers.upper / "etc")
    assert stat.S_IMODE(upper_etc.st_mode) == stat.S_IMODE(os.stat(layers.lower / "etc").st_mode)


def test_every_change_moves_the_generation(union: UnionFS) -> None:
    before = union.generation
    union.setattr(at(union, "etc", "conf"), AttrChange(mode=0o640))
    after_setattr = union.generation
    union.mkdir(at(union), "new", 0o755, ROOT)
    assert before < after_setattr < union.generation
    reading = union.generation
    union.children(at(union, "etc"))
    union.listxattr(at(union, "etc", "conf"))  # (reads move nothing)
    assert union.generation == reading
    with pytest.raises(OSError):
        union.mkdir(at(union), "new", 0o755, ROOT)  # a failed change moves it too: it may have done part
    assert union.generation > reading


def test_copy_up_of_one_hard_link_brings_the_other_name_along(union: UnionFS, layers: Layers) -> None:
    union.copy_up(at(union, "bin", "tool"))
    upper_tool = os.stat(layers.upper / "bin" / "tool")
    assert os.stat(layers.upper / "bin" / "tool-alias").st_ino == upper_tool.st_ino
    assert upper_tool.st_nlink == 2


def test_a_tree_copy_plans_hard_linked_lower_files_first(union: UnionFS) -> None:
    planner = TreePlanner(union.tree, at(union, "bin")).run()
    assert sorted(node.name for node in planner.first) == ["tool", "tool-alias"]
    plan = TreePlanner(union.tree, at(union, "etc")).run()
    assert plan.first == []
    assert isinstance(plan.plan, TreePlan) and sorted(c.name for c in plan.plan.children if isinstance(c, Node)) == [
        "conf",
        "motd",
    ]


def test_rename_of_a_lower_directory_moves_it_whole(union: UnionFS, layers: Layers) -> None:
    union.rename(at(union), "etc", at(union), "etc2", 0)
    assert sorted(c.name for c in union.children(at(union, "etc2"))) == ["conf", "motd"]
    assert (layers.upper / ".wh.etc").exists()
    assert (layers.upper / "etc2" / "conf").read_text() == "conf\n"
    with pytest.raises(OSError):
        union.resolve(("etc",))


def test_a_whiteout_name_cannot_be_created(union: UnionFS) -> None:
    with pytest.raises(OSError) as refused:
        union.mkdir(at(union), ".wh.x", 0o755, ROOT)
    assert refused.value.errno == errno.EINVAL


def test_inode_numbers_are_stable_through_copy_up(union: UnionFS) -> None:
    inodes = InodeTable()
    union.upper.alias = lambda st, node: inodes.alias(st, inodes.nodeid(node))  # type: ignore[union-attr]
    before = inodes.nodeid(at(union, "etc", "conf"))
    union.setattr(at(union, "etc", "conf"), AttrChange(mode=0o600))
    after = at(union, "etc", "conf")
    assert after.layer == 0 and inodes.nodeid(after) == before
    assert inodes.nodeid(at(union, "bin", "tool")) != before


def test_the_inode_table_keeps_every_name_of_a_hard_linked_file() -> None:
    table = InodeTable()
    table.remember(10, ROOT_INODE, "dir")
    table.remember(20, 10, "a")
    table.remember(20, 10, "b")  # a second name of one file
    table.name_gone(20, 10, "b")
    assert table.path(20) == ("dir", "a")
    table.remember(20, 10, "b")
    table.name_gone(20, 10, "a")
    assert table.path(20) == ("dir", "b")
    table.forget(20, 3)
    table.forget(10, 1)
    assert len(table) == 1  # the root alone: what the kernel forgot is dropped


@dataclass
class Ctx:
    uid: int
    gid: int
    pid: int = 0


def entry(mode: int, uid: int, gid: int) -> Node:
    return Node(("x",), 1, os.stat_result((mode, 1, 0, 1, uid, gid, 0, 0, 0, 0)), (1,))


def test_other_users_are_checked_as_the_kernel_would() -> None:
    checks = Checker(True, owner_uid=1000, ids=IdMap(), groups=lambda _pid: [], access_acl=lambda _node: None)
    private = entry(stat.S_IFREG | 0o600, 1000, 1000)
    shared = entry(stat.S_IFREG | 0o644, 1000, 1000)
    checks.require(Ctx(1000, 1000), private, READ | WRITE)  # the mounting user: not checked
    checks.require(Ctx(2000, 2000), shared, READ)
    with pytest.raises(OSError) as denied:
        checks.require(Ctx(2000, 2000), private, READ)
    assert denied.value.errno == errno.EACCES
    sticky = entry(stat.S_IFDIR | 0o1777, 0, 0)
    with pytest.raises(OSError) as kept:
        checks.require_delete(Ctx(2000, 2000), sticky, private)
    assert kept.value.errno == errno.EPERM
    with pytest.raises(OSError):
        checks.require_setattr(Ctx(2000, 2000), shared, AttrChange(mode=0o777))
    inactive = Checker(False, 1000, IdMap(), lambda _pid: [], lambda _node: None)
    inactive.require(Ctx(2000, 2000), private, READ | WRITE | EXEC)


@pytest.mark.skipif(os.geteuid() != 0, reason="the privileged writer: records only where a layer brings them")
def test_a_record_copied_up_or_put_later_shows_though_the_daemon_made_the_file(union: UnionFS, layers: Layers) -> None:
    """A root daemon shows the files it made from their lstat alone (no record read): a record a copy-up brings
    along, or one put on such a file later, must still show."""
    record = OverrideStat(1234, 1234, stat.S_IFREG | 0o640, 0).encode()
    os.setxattr(layers.lower / "etc" / "conf", OVERRIDE_STAT, record)
    copied = union.setattr(at(union, "etc", "conf"), AttrChange(mtime_ns=10**18))
    assert (copied.layer, copied.st.st_uid, stat.S_IMODE(copied.st.st_mode)) == (0, 1234, 0o640)
    assert union.resolve(("etc", "conf")).st.st_uid == 1234

    fd, made = union.create(at(union, "etc"), "new", 0o644, os.O_WRONLY, ROOT)
    os.close(fd)
    assert made.st.st_uid == 0
    upper = union.upper
    assert upper is not None
    dirfd = upper.dirfd(("etc",))
    upper.record_owner(dirfd, "new", replace_stat(made.st, uid=4321, gid=4321))
    assert union.resolve(("etc", "new")).st.st_uid == 4321
