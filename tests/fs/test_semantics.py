"""Promises of ARCHITECTURE section 3 that the kernel oracle cannot check for us."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from tests.fs.conftest import Mounter
from tests.support import snapshot, write
from unionfs.syscalls import RENAME_EXCHANGE, renameat2

AT_FDCWD = -100


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    paths = {n: tmp_path / n for n in ("l1", "l2", "up", "work")}
    for p in paths.values():
        p.mkdir()
    write(paths["l2"] / "etc" / "conf", "base\n")
    write(paths["l2"] / "usr" / "lib" / "a.so", "A" * 5000)
    write(paths["l2"] / "usr" / "lib" / "sub" / "b.so", "B")
    write(paths["l1"] / "usr" / "lib" / "c.so", "C")
    write(paths["l1"] / "usr" / "share" / "doc", "doc")
    return paths


def rw(mounter: Mounter, d: dict[str, Path]) -> Path:
    return mounter([d["l1"], d["l2"]], d["up"], d["work"]).mountpoint


def test_inode_numbers_stable_equal_in_readdir_and_unchanged_by_copy_up(mounter: Mounter, dirs) -> None:
    m = rw(mounter, dirs)
    listed = {e.name: e.inode() for e in os.scandir(m / "usr" / "lib")}
    stated = {n: os.lstat(m / "usr" / "lib" / n).st_ino for n in listed}
    assert listed == stated
    before = os.stat(m / "etc" / "conf").st_ino
    dir_before = os.stat(m / "etc").st_ino
    with open(m / "etc" / "conf", "a") as f:
        f.write("more\n")
    assert (dirs["up"] / "etc" / "conf").exists()  # it was copied up
    assert os.stat(m / "etc" / "conf").st_ino == before
    assert os.stat(m / "etc").st_ino == dir_before
    assert {e.name: e.inode() for e in os.scandir(m / "etc")}["conf"] == before
    assert len(set(stated.values())) == len(stated)


def test_internal_xattrs_and_markers_never_show(mounter: Mounter, dirs) -> None:
    write(dirs["l2"] / "op" / "below", "hidden")
    write(dirs["l1"] / "op" / ".wh..wh..opq", "")
    write(dirs["l1"] / "op" / "above", "shown")
    os.setxattr(dirs["l1"] / "usr", "user.overlay.opaque", b"n")
    os.setxattr(dirs["l1"] / "usr", "user.mine", b"1")
    m = rw(mounter, dirs)
    assert os.listdir(m / "op") == ["above"]
    assert os.listxattr(m / "usr") == ["user.mine"]
    with pytest.raises(OSError) as info:
        os.getxattr(m / "usr", "user.overlay.opaque")
    assert info.value.errno == errno.ENODATA
    with pytest.raises(OSError) as info:
        os.stat(m / "op" / ".wh..wh..opq")
    assert info.value.errno == errno.ENOENT
    with pytest.raises(OSError) as info:
        os.setxattr(m / "usr", "user.overlay.opaque", b"y")
    assert info.value.errno == errno.EPERM


def test_whiteout_names_are_refused_not_lost(mounter: Mounter, dirs) -> None:
    m = rw(mounter, dirs)
    for attempt in (
        lambda: (m / ".wh.conf").write_text("x"),
        lambda: os.mkdir(m / ".wh.dir"),
        lambda: os.symlink("x", m / ".wh.link"),
        lambda: os.rename(m / "etc" / "conf", m / "etc" / ".wh.conf"),
    ):
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EINVAL
    assert (m / "etc" / "conf").read_text() == "base\n"
    if os.geteuid() == 0:
        with pytest.raises(OSError) as info:
            os.mknod(m / "wh", stat.S_IFCHR | 0o600, 0)
        assert info.value.errno == errno.EPERM


def test_an_fd_opened_before_copy_up_reads_the_new_data(mounter: Mounter, dirs) -> None:
    m = rw(mounter, dirs)
    with open(m / "etc" / "conf", "rb") as reader:
        assert reader.read() == b"base\n"
        with open(m / "etc" / "conf", "r+b") as writer:
            writer.write(b"BASE")
        reader.seek(0)
        assert reader.read() == b"BASE\n"


def test_directory_rename_across_layers_has_no_exdev_and_survives_remount(mounter: Mounter, dirs) -> None:
    m = rw(mounter, dirs)
    os.rename(m / "usr" / "lib", m / "lib64")  # a merged dir: lower l1 + l2
    os.rename(m / "etc", m / "usr" / "etc2")  # a lower-only dir
    os.mkdir(m / "fresh")
    write(m / "fresh" / "f", "upper only")
    os.rename(m / "fresh", m / "usr" / "share" / "fresh")  # an upper-only dir into a lower dir
    expected = snapshot(m)
    assert {k for k in expected if k.startswith("lib64/")} == {
        "lib64/a.so",
        "lib64/c.so",
        "lib64/sub",
        "lib64/sub/b.so",
    }
    assert "usr/lib" not in expected and "etc" not in expected and "usr/etc2/conf" in expected
    assert (m / "lib64" / "a.so").read_text() == "A" * 5000
    mount = mounter.mounts[-1]
    mount.remount()
    assert snapshot(m) == expected


def test_rename_onto_an_empty_lower_directory_hides_what_was_below(mounter: Mounter, dirs) -> None:
    write(dirs["l2"] / "target" / "gone", "x")
    m = rw(mounter, dirs)
    os.unlink(m / "target" / "gone")
    os.mkdir(m / "src")
    write(m / "src" / "new", "n")
    os.rename(m / "src", m / "target")
    assert os.listdir(m / "target") == ["new"]
    mounter.mounts[-1].remount()
    assert os.listdir(m / "target") == ["new"]


def test_statfs_reports_the_upper_filesystem(mounter: Mounter, dirs) -> None:
    m = rw(mounter, dirs)
    ours, upper = os.statvfs(m), os.statvfs(dirs["up"])
    assert (ours.f_bsize, ours.f_blocks, ours.f_namemax) == (upper.f_bsize, upper.f_blocks, upper.f_namemax)


def test_new_entries_get_the_callers_mode_and_setgid_inheritance(mounter: Mounter, dirs) -> None:
    os.chmod(dirs["l1"] / "usr", 0o2775)  # the top layer's directory gives the merged one its metadata
    os.chown(dirs["l1"] / "usr", 0, 4242)
    m = rw(mounter, dirs)
    old = os.umask(0o022)
    try:
        os.mkdir(m / "usr" / "newdir", 0o777)
        fd = os.open(m / "usr" / "newfile", os.O_CREAT | os.O_WRONLY, 0o666)
        os.close(fd)
    finally:
        os.umask(old)
    d, f = os.stat(m / "usr" / "newdir"), os.stat(m / "usr" / "newfile")
    assert stat.S_IMODE(d.st_mode) == 0o2755 and d.st_gid == 4242
    assert stat.S_IMODE(f.st_mode) == 0o644 and f.st_gid == 4242


def test_rmdir_of_a_merged_directory_that_is_not_empty(mounter: Mounter, dirs) -> None:
    m = rw(mounter, dirs)
    with pytest.raises(OSError) as info:
        os.rmdir(m / "usr" / "lib")
    assert info.value.errno == errno.ENOTEMPTY
    for name in ("a.so", "c.so", "sub/b.so"):
        os.unlink(m / "usr" / "lib" / name)
    os.rmdir(m / "usr" / "lib" / "sub")
    os.rmdir(m / "usr" / "lib")
    assert sorted(os.listdir(m / "usr")) == ["share"]
    os.mkdir(m / "usr" / "lib")
    assert os.listdir(m / "usr" / "lib") == []  # recreated: opaque, nothing below shows


def test_hard_links_share_one_inode_through_copy_up_rename_and_remount(mounter: Mounter, dirs) -> None:
    write(dirs["l2"] / "bin" / "tool", "v1\n")
    os.link(dirs["l2"] / "bin" / "tool", dirs["l2"] / "usr" / "tool-alias")
    os.link(dirs["l2"] / "bin" / "tool", dirs["l2"] / "etc" / "tool-third")
    m = rw(mounter, dirs)
    a, b, c = m / "bin" / "tool", m / "usr" / "tool-alias", m / "etc" / "tool-third"
    assert os.stat(a).st_ino == os.stat(b).st_ino == os.stat(c).st_ino and os.stat(a).st_nlink == 3
    with open(b, "a") as f:  # copy-up through one name
        f.write("v2\n")
    assert a.read_text() == c.read_text() == "v1\nv2\n"
    assert os.stat(a).st_ino == os.stat(b).st_ino == os.stat(c).st_ino and os.stat(a).st_nlink == 3
    os.rename(m / "etc", m / "etc.moved")  # a directory move keeps the link too
    os.link(a, m / "fourth")
    with open(m / "fourth", "a") as f:
        f.write("v3\n")
    assert (m / "etc.moved" / "tool-third").read_text() == "v1\nv2\nv3\n"
    mounter.mounts[-1].remount()
    names = [a, b, m / "etc.moved" / "tool-third", m / "fourth"]
    assert len({os.stat(n).st_ino for n in names}) == 1 and os.stat(a).st_nlink == 4
    assert all(n.read_text() == "v1\nv2\nv3\n" for n in names)
    with open(a, "a") as f:
        f.write("v4\n")
    assert b.read_text().endswith("v4\n")


def test_reads_follow_copy_up_after_dropping_caches_and_mmap_writes_land(mounter: Mounter, dirs) -> None:
    import mmap

    m = rw(mounter, dirs)
    path = m / "usr" / "lib" / "a.so"
    with open(path, "rb", buffering=0) as reader:  # no user-space buffer: every read asks the kernel
        assert reader.read(4) == b"AAAA"
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mapped:
            mapped[0:4] = b"ZZZZ"
            mapped.flush()
        if os.geteuid() == 0:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        reader.seek(0)
        assert reader.read(4) == b"ZZZZ"
    assert (dirs["up"] / "usr" / "lib" / "a.so").read_bytes()[:4] == b"ZZZZ"
    assert (dirs["l2"] / "usr" / "lib" / "a.so").read_bytes()[:4] == b"AAAA"


def test_metacopy_chmod_copies_no_data_until_the_first_write(mounter: Mounter, dirs) -> None:
    big = b"0123456789abcdef" * 65536  # 1 MiB
    write(dirs["l2"] / "big.bin", big)
    os.link(dirs["l2"] / "big.bin", dirs["l2"] / "etc" / "big-link")
    m = mounter([dirs["l1"], dirs["l2"]], dirs["up"], dirs["work"], options=["metacopy=on"]).mountpoint
    with open(m / "big.bin", "rb", buffering=0) as reader:
        os.chmod(m / "big.bin", 0o600)
        os.utime(m / "big.bin", ns=(5_000_000_000, 6_000_000_000))
        upper = dirs["up"] / "big.bin"
        assert os.stat(upper).st_blocks == 0 and os.stat(upper).st_size == len(big)  # metadata only
        assert (m / "big.bin").read_bytes() == big
        st = os.stat(m / "big.bin")
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime_ns == 6_000_000_000
        assert (m / "etc" / "big-link").read_bytes() == big
        with open(m / "etc" / "big-link", "r+b") as f:  # the first write brings the data, for every name
            f.write(b"XY")
        assert os.stat(upper).st_blocks > 0
        assert (m / "big.bin").read_bytes() == b"XY" + big[2:]
        assert reader.read(4) == b"XY23"  # an fd opened before follows the file
    assert (dirs["l2"] / "big.bin").read_bytes() == big
    mounter.mounts[-1].remount()
    assert (m / "big.bin").read_bytes() == b"XY" + big[2:] and os.stat(m / "big.bin").st_ino == os.stat(
        m / "etc" / "big-link"
    ).st_ino


def test_metacopy_file_survives_remount_and_rename(mounter: Mounter, dirs) -> None:
    write(dirs["l2"] / "data", "payload" * 1000)
    m = mounter([dirs["l1"], dirs["l2"]], dirs["up"], dirs["work"], options=["metacopy=on"]).mountpoint
    os.chown(m / "data", 1000, 1000)
    mounter.mounts[-1].remount()
    assert (m / "data").read_text() == "payload" * 1000 and os.stat(m / "data").st_uid == 1000
    os.rename(m / "data", m / "usr" / "moved")  # a move needs the data: it is copied up first
    assert (m / "usr" / "moved").read_text() == "payload" * 1000
    assert os.stat(dirs["up"] / "usr" / "moved").st_blocks > 0


def test_link_and_rename_within_a_directory_only_below(mounter: Mounter, dirs) -> None:
    """The copy-up of the source brings the directory up; the second step must not try to make it again."""
    write(dirs["l2"] / "only-below" / "a", "a\n")
    write(dirs["l2"] / "only-below2" / "b", "b\n")
    m = rw(mounter, dirs)
    os.link(m / "only-below" / "a", m / "only-below" / "a-link")
    assert os.stat(m / "only-below" / "a").st_ino == os.stat(m / "only-below" / "a-link").st_ino
    os.rename(m / "only-below2" / "b", m / "only-below2" / "b-renamed")
    assert os.listdir(m / "only-below2") == ["b-renamed"]


def exchange(a: Path, b: Path) -> None:
    """renameat2(a, b, RENAME_EXCHANGE): swap two names in one step."""
    renameat2(AT_FDCWD, str(a), AT_FDCWD, str(b), RENAME_EXCHANGE)


def test_rename_exchange_swaps_lower_merged_and_upper_entries_and_survives_remount(mounter: Mounter, dirs) -> None:
    write(dirs["l2"] / "opt" / "lower-only", "L")
    m = rw(mounter, dirs)
    write(m / "new", "upper file")
    os.mkdir(m / "updir")
    write(m / "updir" / "u", "u")
    ino_conf = os.lstat(m / "etc" / "conf").st_ino
    exchange(m / "new", m / "etc" / "conf")  # an upper file and a lower file
    exchange(m / "usr" / "lib", m / "opt")  # a merged directory (two layers) and a lower-only one
    exchange(m / "updir", m / "usr" / "share" / "doc")  # an upper directory and a lower file
    expected = snapshot(m)
    assert (m / "new").read_text() == "base\n" and os.lstat(m / "new").st_ino == ino_conf
    assert (m / "etc" / "conf").read_text() == "upper file"
    assert sorted(os.listdir(m / "opt")) == ["a.so", "c.so", "sub"]
    assert os.listdir(m / "usr" / "lib") == ["lower-only"]
    assert (m / "updir").read_text() == "doc"
    assert os.listdir(m / "usr" / "share" / "doc") == ["u"]
    with pytest.raises(OSError) as info:
        exchange(m / "new", m / "missing")
    assert info.value.errno == errno.ENOENT
    mounter.mounts[-1].remount()
    assert snapshot(m) == expected


def test_a_file_stays_reachable_by_one_name_when_another_of_its_names_goes(mounter: Mounter, dirs) -> None:
    m = rw(mounter, dirs)
    write(m / "up-file", "upper\n")
    for first, second in ((m / "etc" / "conf", m / "etc" / "conf2"), (m / "up-file", m / "up-link")):
        before = first.read_text()
        os.link(first, second)  # the kernel now knows the file by the second name too
        assert os.stat(second).st_nlink == 2
        os.unlink(second)
        with open(first) as f:  # by the name the kernel had cached: no lookup on the way
            assert f.read() == before
        assert os.stat(first).st_nlink == 1
    os.link(m / "up-file", m / "a")
    os.link(m / "up-file", m / "b")
    os.rename(m / "a", m / "c")  # a second name moves; the others keep working
    os.unlink(m / "b")
    os.unlink(m / "up-file")
    assert (m / "c").read_text() == "upper\n" and os.stat(m / "c").st_nlink == 1


def test_what_the_kernel_caches_for_minutes_stays_true_after_every_kind_of_change(mounter: Mounter, dirs) -> None:
    """Entries, attributes, failed lookups and file data are cached by the kernel for minutes, upper ones too:
    each change made through the mount must show at once, never the cached state before it."""
    import mmap

    m = rw(mounter, dirs)
    new = m / "etc" / "new"
    assert not new.exists()  # a failed lookup, now cached
    new.write_bytes(b"one")
    assert new.read_bytes() == b"one"  # its data now in the page cache
    with open(new, "r+b") as f:
        f.seek(1)
        f.write(b"NE")
    assert new.read_bytes() == b"oNE"
    with open(new, "r+b") as f, mmap.mmap(f.fileno(), 0) as mapped:
        mapped[0:1] = b"0"
    assert new.read_bytes() == b"0NE"
    os.truncate(new, 1)
    assert new.read_bytes() == b"0" and new.stat().st_size == 1
    before = new.stat()
    os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns - 10**9))
    assert new.stat().st_mtime_ns == before.st_mtime_ns - 10**9
    os.chmod(new, 0o600)
    assert stat.S_IMODE(new.stat().st_mode) == 0o600

    write(m / "etc" / "other", "other")
    os.rename(m / "etc" / "other", new)  # the name now means another file
    assert new.read_bytes() == b"other"
    new.unlink()
    assert not new.exists()
    new.write_bytes(b"again")
    assert new.read_bytes() == b"again"

    conf = m / "etc" / "conf"
    assert conf.read_bytes() == b"base\n"  # a lower file's data and attributes, cached
    with open(conf, "ab") as f:  # copied up
        f.write(b"more\n")
    assert conf.read_bytes() == b"base\nmore\n" and conf.stat().st_size == 10
    os.link(conf, m / "etc" / "conf2")
    assert conf.stat().st_nlink == 2 and (m / "etc" / "conf2").read_bytes() == b"base\nmore\n"
    os.rename(m / "usr" / "lib", m / "lib")  # a merged directory moves: both names change at once
    assert not (m / "usr" / "lib").exists()
    assert (m / "lib" / "sub" / "b.so").read_bytes() == b"B"
    (m / "usr" / "lib").mkdir()
    assert os.listdir(m / "usr" / "lib") == []
