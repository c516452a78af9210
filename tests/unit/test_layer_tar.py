"""Layer dir <-> tar: format, determinism, round trips in both whiteout forms, and hostile tars."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from imagebuild.layer import (
    ZSTD_AVAILABLE,
    LayerError,
    compress_gzip,
    compress_zstd,
    extract_layer_tar,
    layer_digests,
    write_layer_tar,
)
from imagebuild.layer import whiteouts as wh
from imagebuild.layer.extract import WhiteoutForm

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: chown, mknod, trusted.* xattrs")

T0 = 1_700_000_000
CLAMP = 1_500_000_000


# --- building layer trees ---------------------------------------------------------------------------------


@dataclass
class E:
    """One entry of a test tree."""

    path: str
    kind: str  # dir file hardlink symlink chr blk fifo whiteout
    data: bytes | str | tuple[int, int] = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


def rich_spec(form: WhiteoutForm) -> list[E]:
    """Every kind of entry; whiteouts and opaque dirs in one form ("chardev" or "file")."""
    opaque = (
        [E("opq", "dir", mode=0o755, xattrs={wh.TRUSTED_OPAQUE: b"y"})]
        if form == "chardev"
        else [E("opq", "dir", mode=0o755), E("opq/.wh..wh..opq", "file")]
    )
    whiteout = [E("gone", "whiteout")] if form == "chardev" else [E(".wh.gone", "file")]
    return [
        E("bin", "dir", mode=0o755),
        E("bin/sh", "file", b"#!/bin/sh\n", mode=0o4755),
        E("bin/link-to-sh", "hardlink", "bin/sh"),
        E("etc", "dir", mode=0o755),
        E("etc/passwd", "file", b"root:x:0:0::/root:/bin/sh\n", xattrs={"user.comment": b"hi\xff\x00there"}),
        E("etc/shadow", "file", b"root:!:1::::::\n", mode=0o640, gid=42),
        E("home", "dir", mode=0o755),
        E("home/u", "dir", mode=0o700, uid=1000, gid=1000),
        E("home/u/.profile", "file", b"export A=1\n", mode=0o600, uid=1000, gid=1000),
        E("home/u/passwd-link", "hardlink", "etc/passwd"),
        E("lib", "symlink", "usr/lib"),
        E("abs", "symlink", "/etc/passwd"),
        E("dangling", "symlink", "../../nowhere"),
        E("dev", "dir", mode=0o755),
        E("dev/null", "chr", (1, 3), mode=0o666),
        E("dev/loop0", "blk", (7, 0), mode=0o660, gid=6),
        E("dev/initctl", "fifo", mode=0o600),
        E("ro", "dir", mode=0o555),
        E("ro/file", "file", b"read only dir content", mode=0o444),
        E("caps", "file", b"\x7fELF", mode=0o755, xattrs={"user.a": b"1", "trusted.b": b"2"}),
        E("nonascii-\u00e9\u00e8", "file", b"utf-8 name"),
        E("long/" + "n" * 120, "file", b"long name"),
        E("long", "dir", mode=0o751),
        E("empty", "file", b""),
        *opaque,
        E("opq/kept", "file", b"kept"),
        *whiteout,
    ]


def _make_entry(root: Path, e: E) -> None:
    path = root / e.path
    if e.kind == "dir":
        path.mkdir(exist_ok=True)
    elif e.kind == "file":
        path.write_bytes(e.data if isinstance(e.data, bytes) else b"")
    elif e.kind == "symlink":
        assert isinstance(e.data, str)
        os.symlink(e.data, path)
    elif e.kind in ("chr", "blk"):
        assert isinstance(e.data, tuple)
        kind = stat.S_IFCHR if e.kind == "chr" else stat.S_IFBLK
        os.mknod(path, kind | 0o600, os.makedev(*e.data))
    elif e.kind == "fifo":
        os.mkfifo(path)
    elif e.kind == "whiteout":
        os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
    else:
        raise AssertionError(e.kind)


def make_tree(root: Path, spec: list[E], *, reverse: bool = False, mtime: int = T0) -> Path:
    """Create `spec` under `root` (siblings in reverse order when asked), then set all metadata."""
    root.mkdir()
    dirs = sorted((e for e in spec if e.kind == "dir"), key=lambda e: e.path.count("/"))
    others = [e for e in spec if e.kind not in ("dir", "hardlink")]
    for e in dirs:
        (root / e.path).mkdir()
    for filler in range(3 if reverse else 0):  # shift inode numbers in the second copy
        (root / f"filler{filler}").write_bytes(b"x")
    for e in reversed(others) if reverse else others:
        _make_entry(root, e)
    for e in (e for e in spec if e.kind == "hardlink"):
        assert isinstance(e.data, str)
        os.link(root / e.data, root / e.path)
    for filler in range(3 if reverse else 0):
        (root / f"filler{filler}").unlink()
    for i, e in enumerate(spec):
        if e.kind == "hardlink":
            continue
        path = root / e.path
        if e.kind != "whiteout":
            os.chown(path, e.uid, e.gid, follow_symlinks=False)
        if e.kind != "symlink":
            os.chmod(path, e.mode if e.kind != "whiteout" else 0)
        for name, value in e.xattrs.items():
            os.setxattr(path, name, value, follow_symlinks=False)
        os.utime(path, (mtime + i, mtime + i), follow_symlinks=False)
    os.utime(root, (mtime, mtime))
    return root


def tar_bytes(layer: Path, clamp: int | None = None) -> bytes:
    out = io.BytesIO()
    write_layer_tar(str(layer), out, mtime_clamp=clamp)
    return out.getvalue()


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.getmembers()


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """What a layer tree means: types, modes, owners, contents, targets, devices, xattrs, mtimes, links."""
    inodes: dict[int, list[str]] = {}
    result: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = os.lstat(path)
            inodes.setdefault(st.st_ino, []).append(rel)
            content: Any = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                content = (os.major(st.st_rdev), os.minor(st.st_rdev))
            xattrs = {k: os.getxattr(path, k, follow_symlinks=False) for k in os.listxattr(path, follow_symlinks=False)}
            # the opaque marker is written with its directory's mtime: its own mtime means nothing
            mtime = None if name == wh.OPAQUE_MARKER else int(st.st_mtime)
            mode, kind = stat.S_IMODE(st.st_mode), stat.S_IFMT(st.st_mode)
            result[rel] = (
                kind,
                mode,
                st.st_uid,
                st.st_gid,
                content,
                sorted(xattrs.items()),
                mtime,
                st.st_ino,
            )
    for rel, value in list(result.items()):
        group = tuple(sorted(inodes[value[-1]]))
        result[rel] = (*value[:-1], group if len(group) > 1 else None)
    return result


def extract(data: bytes, dest: Path, form: WhiteoutForm = "chardev", rootless: bool = False) -> Path:
    extract_layer_tar(io.BytesIO(data), str(dest), whiteout_form=form, rootless=rootless, sync=False)
    return dest


# --- the tar format -----------------------------------------------------------------------------------------


@needs_root
def test_tar_entries_order_and_headers(tmp_path: Path) -> None:
    layer = make_tree(tmp_path / "layer", rich_spec("chardev"))
    data = tar_bytes(layer)
    infos = members(data)
    names = [m.name for m in infos]

    # depth-first, each directory's entries in byte order; names relative, without "./"
    assert names[:3] == [".wh.gone", "abs", "bin"]
    assert names.index("bin/link-to-sh") < names.index("bin/sh") < names.index("caps")
    assert all(not n.startswith(("/", "./")) for n in names)
    assert names.index("opq/.wh..wh..opq") == names.index("opq") + 1
    assert "gone" not in names and "filler0" not in names

    by_name = {m.name: m for m in infos}
    assert all(m.uname == "" and m.gname == "" for m in infos)
    # the first name of a hard-linked file in tar order is the file; later names link to it
    assert by_name["bin/link-to-sh"].isreg() and by_name["bin/link-to-sh"].size == len(b"#!/bin/sh\n")
    assert by_name["bin/sh"].islnk() and by_name["bin/sh"].linkname == "bin/link-to-sh"
    assert by_name["home/u/passwd-link"].islnk() and by_name["home/u/passwd-link"].linkname == "etc/passwd"
    assert by_name["bin/link-to-sh"].mode == 0o4755
    assert (by_name["home/u"].uid, by_name["home/u"].gid, by_name["home/u"].mode) == (1000, 1000, 0o700)
    assert by_name["abs"].issym() and by_name["abs"].linkname == "/etc/passwd"
    assert (by_name["dev/null"].devmajor, by_name["dev/null"].devminor) == (1, 3)
    assert by_name["dev/loop0"].isblk() and by_name["dev/initctl"].isfifo()
    gone = by_name[".wh.gone"]
    assert gone.isreg() and gone.size == 0 and (gone.mode, gone.uid, gone.gid) == (0o644, 0, 0)
    assert (
        by_name["etc/passwd"].pax_headers["SCHILY.xattr.user.comment"].encode("utf-8", "surrogateescape")
        == b"hi\xff\x00there"
    )
    assert "SCHILY.xattr.trusted.overlay.opaque" not in by_name["opq"].pax_headers
    assert by_name["long/" + "n" * 120].size == len(b"long name")

    # PAX, no atime/ctime, directories written with a trailing slash
    assert data[257:265] == b"ustar\x0000"
    assert b" atime=" not in data and b" ctime=" not in data
    assert b"bin/\x00" in data


@needs_root
def test_internal_xattrs_never_reach_the_tar(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    f = layer / "f"
    f.write_bytes(b"x")
    for name in (
        "user.fuseoverlayfs.x",
        "user.overlay.y",
        "trusted.overlay.z",
        "user.unionfs.w",
        "user.zz",
        "user.aa",
    ):
        os.setxattr(f, name, b"v")
    (info,) = members(tar_bytes(layer))
    assert list(info.pax_headers) == ["SCHILY.xattr.user.aa", "SCHILY.xattr.user.zz"]


def test_mtime_clamp_is_min_of_mtime_and_clamp(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "old").write_bytes(b"o")
    (layer / "new").write_bytes(b"n")
    os.utime(layer / "old", (100, 100))
    os.utime(layer / "new", (5000.7, 5000.7))
    clamped = {m.name: m.mtime for m in members(tar_bytes(layer, clamp=1000))}
    assert clamped == {"new": 1000, "old": 100}
    unclamped = {m.name: m.mtime for m in members(tar_bytes(layer))}
    assert unclamped == {"new": 5000, "old": 100}


def test_symlinks_in_the_layer_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"host data")
    layer = tmp_path / "layer"
    layer.mkdir()
    os.symlink(outside, layer / "dirlink")
    os.symlink("/etc", layer / "etc")
    os.symlink(outside / "secret", layer / "filelink")
    data = tar_bytes(layer)
    assert [(m.name, m.type) for m in members(data)] == [
        ("dirlink", tarfile.SYMTYPE),
        ("etc", tarfile.SYMTYPE),
        ("filelink", tarfile.SYMTYPE),
    ]
    assert b"host data" not in data


def test_sockets_are_skipped_and_aufs_metadata_ignored(tmp_path: Path) -> None:
    import socket

    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / ".wh..wh.plnk").mkdir()
    (layer / "f").write_bytes(b"")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(layer / "sock"))
        assert [m.name for m in members(tar_bytes(layer))] == ["f"]
    finally:
        sock.close()


def test_override_stat_sets_owner_and_mode(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    f = layer / "f"
    f.write_bytes(b"x")
    os.chmod(f, 0o600)
    os.setxattr(f, wh.OVERRIDE_STAT, b"12:34:04711")
    dev = layer / "dev"
    dev.write_bytes(b"")
    os.setxattr(dev, wh.OVERRIDE_STAT, b"0:5:0620:char-4-1")  # a device recorded on a placeholder
    by_name = {m.name: m for m in members(tar_bytes(layer))}
    assert (by_name["f"].uid, by_name["f"].gid, by_name["f"].mode) == (12, 34, 0o4711)
    assert "SCHILY.xattr." + wh.OVERRIDE_STAT not in by_name["f"].pax_headers
    assert by_name["dev"].ischr() and (by_name["dev"].devmajor, by_name["dev"].devminor) == (4, 1)
    assert (by_name["dev"].gid, by_name["dev"].mode) == (5, 0o620)


@needs_root
def test_host_owner_maps_unrecorded_entries_to_root(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    os.symlink("target", layer / "link")
    os.chown(layer / "link", 1234, 1235, follow_symlinks=False)
    os.mkfifo(layer / "fifo")
    os.chown(layer / "fifo", 1234, 77)
    (layer / "f").write_bytes(b"")
    os.chown(layer / "f", 1234, 1235)
    os.setxattr(layer / "f", wh.OVERRIDE_STAT, b"1234:1235:0644")  # a record always wins
    out = io.BytesIO()
    write_layer_tar(str(layer), out, mtime_clamp=None, host_owner=(1234, 1235))
    owners = {m.name: (m.uid, m.gid) for m in members(out.getvalue())}
    assert owners == {"f": (1234, 1235), "fifo": (0, 77), "link": (0, 0)}
    assert {m.name: (m.uid, m.gid) for m in members(tar_bytes(layer))}["link"] == (1234, 1235)


def test_malformed_override_stat_names_the_entry(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "sub").mkdir(parents=True)
    (layer / "sub" / "bad").write_bytes(b"x")
    os.setxattr(layer / "sub" / "bad", wh.OVERRIDE_STAT, b"root:0:0755")
    with pytest.raises(LayerError, match="sub/bad"):
        tar_bytes(layer)


@needs_root
def test_whiteout_forms_give_identical_tars(tmp_path: Path) -> None:
    chardev = make_tree(tmp_path / "chardev", rich_spec("chardev"))
    file_form = make_tree(tmp_path / "file", rich_spec("file"))
    # the only difference between the trees is the whiteout / opaque form
    assert tar_bytes(chardev, CLAMP) == tar_bytes(file_form, CLAMP)
    os.removexattr(chardev / "opq", wh.TRUSTED_OPAQUE)
    os.setxattr(chardev / "opq", wh.USER_OPAQUE, b"y")
    assert tar_bytes(chardev, CLAMP) == tar_bytes(file_form, CLAMP)
    os.setxattr(chardev / "opq", wh.USER_OPAQUE, b"x")  # "x" is not opaque
    assert tar_bytes(chardev, CLAMP) != tar_bytes(file_form, CLAMP)


@needs_root
def test_both_whiteout_forms_of_one_name_make_one_entry(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "d").mkdir(parents=True)
    os.mknod(layer / "x", stat.S_IFCHR, 0)
    (layer / ".wh.x").write_bytes(b"")
    (layer / "d" / ".wh..wh..opq").write_bytes(b"")
    os.setxattr(layer / "d", wh.TRUSTED_OPAQUE, b"y")
    (layer / "d" / "!first").write_bytes(b"")
    assert [m.name for m in members(tar_bytes(layer))] == [".wh.x", "d", "d/.wh..wh..opq", "d/!first"]


# --- determinism --------------------------------------------------------------------------------------------


@needs_root
def test_same_tree_same_bytes_under_a_clamp(tmp_path: Path) -> None:
    spec = rich_spec("chardev")
    a = make_tree(tmp_path / "a", spec, mtime=T0)
    b = make_tree(tmp_path / "b", spec, reverse=True, mtime=T0 + 12345)
    assert os.stat(a / "bin" / "sh").st_ino != os.stat(b / "bin" / "sh").st_ino
    assert tar_bytes(a, CLAMP) == tar_bytes(b, CLAMP)
    assert tar_bytes(a, CLAMP) == tar_bytes(a, CLAMP)
    # without the clamp the different mtimes show
    assert tar_bytes(a) != tar_bytes(b)


@needs_root
def test_layer_digests_match_the_tar(tmp_path: Path) -> None:
    layer = make_tree(tmp_path / "layer", rich_spec("chardev"))
    data = tar_bytes(layer, CLAMP)
    assert layer_digests(str(layer), CLAMP) == ("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    assert layer_digests(str(layer), None)[0] != layer_digests(str(layer), CLAMP)[0]


def test_gzip_is_deterministic(tmp_path: Path) -> None:
    raw = os.urandom(1000) * 300
    first = io.BytesIO()
    digest, size = compress_gzip(io.BytesIO(raw), first)
    with open(tmp_path / "layer.tar.gz", "wb") as named:  # a named file must not leak its name
        assert compress_gzip(io.BytesIO(raw), named) == (digest, size)
    second = (tmp_path / "layer.tar.gz").read_bytes()
    assert second == first.getvalue()
    assert (digest, size) == ("sha256:" + hashlib.sha256(second).hexdigest(), len(second))
    assert second[3] == 0  # no FNAME, no FEXTRA, no comment
    assert second[4:8] == b"\0\0\0\0"  # mtime 0
    assert b"layer.tar" not in second
    assert gzip.decompress(second) == raw


def test_zstd_roundtrip_or_clear_error() -> None:
    raw = b"layer" * 1000
    out = io.BytesIO()
    if not ZSTD_AVAILABLE:
        with pytest.raises(LayerError, match="zstandard"):
            compress_zstd(io.BytesIO(raw), out)
        return
    digest, size = compress_zstd(io.BytesIO(raw), out)
    assert size == len(out.getvalue()) and digest.startswith("sha256:")
    again = io.BytesIO()
    assert compress_zstd(io.BytesIO(raw), again) == (digest, size)


# --- round trips --------------------------------------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("form", ["chardev", "file"])
def test_roundtrip_restores_the_same_tree(tmp_path: Path, form: WhiteoutForm) -> None:
    source = make_tree(tmp_path / "source", rich_spec(form))
    data = tar_bytes(source)
    dest = extract(data, tmp_path / "dest", form)
    assert snapshot(dest) == snapshot(source)
    assert tar_bytes(dest) == data


@needs_root
@pytest.mark.parametrize("form", ["chardev", "file"])
def test_extraction_in_either_form_rewrites_to_the_same_tar(tmp_path: Path, form: WhiteoutForm) -> None:
    other: WhiteoutForm = "file" if form == "chardev" else "chardev"
    data = tar_bytes(make_tree(tmp_path / "source", rich_spec(other)))
    assert tar_bytes(extract(data, tmp_path / "dest", form)) == data


@needs_root
@pytest.mark.parametrize("form", ["chardev", "file"])
def test_rootless_roundtrip_keeps_owners_modes_and_devices_in_xattrs(tmp_path: Path, form: WhiteoutForm) -> None:
    data = tar_bytes(make_tree(tmp_path / "source", rich_spec("chardev")))
    dest = extract(data, tmp_path / "dest", form, rootless=True)
    assert tar_bytes(dest) == data

    def record(rel: str) -> bytes:
        return os.getxattr(dest / rel, wh.OVERRIDE_STAT, follow_symlinks=False)

    assert record("home/u") == b"1000:1000:0700:dir"
    assert record("bin/sh") == b"0:0:4755:file"
    assert record("etc/shadow") == b"0:42:0640:file"
    assert record(".") == b"0:0:0755:dir"
    null = os.lstat(dest / "dev" / "null")
    assert stat.S_ISREG(null.st_mode) and null.st_size == 0  # no device node without privileges
    assert record("dev/null") == b"0:0:0666:char-1-3"  # the extended form fuse-overlayfs reads
    assert stat.S_IMODE(os.stat(dest / "bin" / "sh").st_mode) == 0o755  # no setuid bit on the host
    assert stat.S_IMODE(os.stat(dest / "ro").st_mode) == 0o755  # still writable by its owner
    if form == "chardev":
        assert os.getxattr(dest / "opq", wh.USER_OPAQUE) == b"y"
        assert wh.TRUSTED_OPAQUE not in os.listxattr(dest / "opq")


# --- extraction of hand-made tars ---------------------------------------------------------------------------


def make_tar(entries: Iterable[tuple[str, bytes, dict[str, Any]]]) -> bytes:
    """A tar from (name, type, attributes) triples; attribute `data` is the file content."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, attrs in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mtime = attrs.pop("mtime", T0)
            info.mode = attrs.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
            content = attrs.pop("data", b"")
            for key, value in attrs.items():
                setattr(info, key, value)
            info.size = len(content) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(content) if kind == tarfile.REGTYPE else None)
    return out.getvalue()


def reg(name: str, data: bytes = b"", **attrs: Any) -> tuple[str, bytes, dict[str, Any]]:
    return (name, tarfile.REGTYPE, {"data": data, **attrs})


def dir_(name: str, **attrs: Any) -> tuple[str, bytes, dict[str, Any]]:
    return (name, tarfile.DIRTYPE, attrs)


def sym(name: str, target: str) -> tuple[str, bytes, dict[str, Any]]:
    return (name, tarfile.SYMTYPE, {"linkname": target})


def hard(name: str, target: str) -> tuple[str, bytes, dict[str, Any]]:
    return (name, tarfile.LNKTYPE, {"linkname": target})


def whiteout_tar() -> bytes:
    return make_tar(
        [
            reg(".wh.foo"),
            dir_("d"),
            reg("d/.wh..wh..opq"),
            reg("d/keep", b"k"),
            dir_("e"),
            reg(".wh.e"),
            ("g", tarfile.CHRTYPE, {"devmajor": 0, "devminor": 0}),
            reg(".wh..wh.plnk"),
        ]
    )


@needs_root
def test_whiteouts_extract_as_chardevs_and_opaque_xattrs(tmp_path: Path) -> None:
    dest = extract(whiteout_tar(), tmp_path / "dest", "chardev")
    assert sorted(os.listdir(dest)) == ["d", "e", "foo", "g"]
    for name in ("foo", "g"):
        st = os.lstat(dest / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.listdir(dest / "d") == ["keep"]
    assert os.getxattr(dest / "d", wh.TRUSTED_OPAQUE) == b"y"
    # a whiteout for a directory of the same layer makes that directory opaque instead of removing it
    assert os.getxattr(dest / "e", wh.TRUSTED_OPAQUE) == b"y"


def test_whiteouts_extract_as_files(tmp_path: Path) -> None:
    dest = extract(whiteout_tar(), tmp_path / "dest", "file", rootless=not IS_ROOT)
    assert sorted(os.listdir(dest)) == [".wh.e", ".wh.foo", ".wh.g", "d", "e"]
    assert (dest / ".wh.foo").read_bytes() == b""
    assert sorted(os.listdir(dest / "d")) == [".wh..wh..opq", "keep"]
    assert not any(name in os.listxattr(dest / "d") for name in wh.OPAQUE_XATTRS)


@needs_root
def test_tar_cannot_plant_internal_xattrs(tmp_path: Path) -> None:
    pax = {
        "SCHILY.xattr.trusted.overlay.redirect": "/etc",
        "SCHILY.xattr.user.containers.override_stat": "0:0:04755",
        "SCHILY.xattr.user.fuseoverlayfs.opaque": "y",
        "SCHILY.xattr.user.ok": "fine",
    }
    dest = extract(make_tar([reg("f", b"x", pax_headers=pax)]), tmp_path / "dest")
    assert os.listxattr(dest / "f") == ["user.ok"]


def test_duplicates_last_entry_wins(tmp_path: Path) -> None:
    data = make_tar(
        [
            reg("f", b"first"),
            reg("f", b"second"),
            dir_("d", mode=0o700),
            reg("d/child", b"c"),
            dir_("d", mode=0o750),
            reg("x", b"file"),
            dir_("x"),
            reg("x/y", b"y"),
            dir_("gone"),
            reg("gone/child"),
            reg("gone", b"now a file"),
            reg("linked", b"target"),
            hard("alias", "linked"),
            reg("linked", b"replaced"),
        ]
    )
    dest = extract(data, tmp_path / "dest", rootless=not IS_ROOT)
    assert (dest / "f").read_bytes() == b"second"
    assert (dest / "d" / "child").read_bytes() == b"c"
    assert stat.S_IMODE(os.stat(dest / "d").st_mode) == 0o750
    assert (dest / "x" / "y").read_bytes() == b"y"
    assert (dest / "gone").read_bytes() == b"now a file"
    assert (dest / "alias").read_bytes() == b"target"  # the earlier inode keeps its other name
    assert (dest / "linked").read_bytes() == b"replaced"


def test_hardlinks_share_an_inode(tmp_path: Path) -> None:
    data = make_tar([dir_("a"), reg("a/f", b"data", mode=0o600), hard("b", "a/f"), hard("./c", "./a/f")])
    dest = extract(data, tmp_path / "dest", rootless=not IS_ROOT)
    st = os.stat(dest / "a" / "f")
    assert st.st_nlink == 3
    assert os.stat(dest / "b").st_ino == os.stat(dest / "c").st_ino == st.st_ino


def test_gzip_input_and_existing_empty_dest(tmp_path: Path) -> None:
    raw = make_tar([dir_("d"), reg("d/f", b"payload", mode=0o640)])
    compressed = io.BytesIO()
    compress_gzip(io.BytesIO(raw), compressed)
    dest = tmp_path / "dest"
    dest.mkdir()
    os.chmod(dest, 0o711)
    extract(compressed.getvalue(), dest, rootless=not IS_ROOT)
    assert (dest / "d" / "f").read_bytes() == b"payload"
    assert stat.S_IMODE(os.stat(dest / "d" / "f").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o711
    assert sorted(os.listdir(tmp_path)) == ["dest"]


def test_zstd_input_without_module_is_a_clear_error(tmp_path: Path) -> None:
    if ZSTD_AVAILABLE:
        raw = make_tar([reg("f", b"z")])
        compressed = io.BytesIO()
        compress_zstd(io.BytesIO(raw), compressed)
        assert (extract(compressed.getvalue(), tmp_path / "dest", rootless=True) / "f").read_bytes() == b"z"
        return
    with pytest.raises(LayerError, match="zstandard"):
        extract(b"\x28\xb5\x2f\xfd" + b"\0" * 100, tmp_path / "dest")
    assert os.listdir(tmp_path) == []


# --- hostile tars -------------------------------------------------------------------------------------------


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "sentinel"
    path.write_bytes(b"original")
    return path


def assert_untouched(sentinel: Path, tmp_path: Path) -> None:
    assert sentinel.read_bytes() == b"original"
    assert os.stat(sentinel).st_nlink == 1
    assert os.listdir(sentinel.parent) == ["sentinel"]
    assert os.listdir(tmp_path) == ["outside"]  # no dest, no temporary directory left


HOSTILE: dict[str, Callable[[Path], list[tuple[str, bytes, dict[str, Any]]]]] = {
    # `s` is the sentinel; entries aim both at it and at a new name beside it ("planted")
    "absolute path": lambda s: [reg(str(s.parent / "planted"), b"pwned")],
    "absolute path (existing)": lambda s: [reg(str(s), b"pwned")],
    "dotdot": lambda _s: [reg("../outside/planted", b"pwned")],
    "dotdot inside": lambda _s: [dir_("a"), reg("a/../../outside/planted", b"pwned")],
    "dotdot dir": lambda _s: [dir_("../outside/planted")],
    "symlink parent (absolute)": lambda s: [sym("evil", str(s.parent)), reg("evil/planted", b"pwned")],
    "symlink parent (relative)": lambda _s: [sym("evil", "../outside"), reg("evil/planted", b"pwned")],
    "symlink parent (existing)": lambda _s: [sym("evil", "../outside"), reg("evil/sentinel", b"pwned")],
    "symlink parent of a dir": lambda s: [sym("evil", str(s.parent)), dir_("evil/planted")],
    "symlink parent of a symlink": lambda s: [sym("evil", str(s.parent)), sym("evil/planted", "/")],
    "symlink parent deep": lambda s: [dir_("a"), sym("a/b", "/"), reg("a/b" + str(s.parent / "planted"))],
    "hard link out (dotdot)": lambda _s: [hard("x", "../outside/sentinel")],
    "hard link out (absolute)": lambda s: [hard("x", str(s))],
    "hard link through symlink": lambda s: [sym("evil", str(s.parent)), hard("x", "evil/sentinel")],
    "hard link planted through symlink": lambda s: [
        reg("f"),
        sym("evil", str(s.parent)),
        hard("evil/planted", "f"),
    ],
    "hard link to a missing entry": lambda _s: [reg("other"), hard("x", "later")],
    "hard link to a directory": lambda _s: [dir_("d"), hard("x", "d")],
    "parent is a file": lambda _s: [reg("f", b""), reg("f/x", b"")],
    "whiteout as a parent": lambda _s: [reg(".wh.d/x", b"")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tar_is_refused_and_leaves_nothing(tmp_path: Path, sentinel: Path, case: str) -> None:
    entries = HOSTILE[case](sentinel)
    bad_name = entries[-1][0]
    data = make_tar(entries)
    with pytest.raises(LayerError) as raised:
        extract(data, tmp_path / "dest", rootless=not IS_ROOT)
    assert repr(bad_name) in str(raised.value)
    assert_untouched(sentinel, tmp_path)


def test_replacing_a_symlink_never_writes_through_it(tmp_path: Path, sentinel: Path) -> None:
    data = make_tar(
        [
            sym("evil", str(sentinel)),
            reg("evil", b"pwned"),
            sym("evildir", str(sentinel.parent)),
            dir_("evildir"),
            reg("evildir/sentinel", b"pwned"),
            sym("ln", str(sentinel)),
            hard("ln2", "ln"),
        ]
    )
    dest = extract(data, tmp_path / "dest", rootless=not IS_ROOT)
    assert sentinel.read_bytes() == b"original" and os.stat(sentinel).st_nlink == 1
    assert (dest / "evil").read_bytes() == b"pwned" and not (dest / "evil").is_symlink()
    assert (dest / "evildir").is_dir() and not (dest / "evildir").is_symlink()
    assert os.readlink(dest / "ln2") == str(sentinel)  # a hard link to the symlink itself
    assert os.lstat(dest / "ln2").st_ino == os.lstat(dest / "ln").st_ino


def test_truncated_and_corrupt_input(tmp_path: Path) -> None:
    data = make_tar([reg("big", os.urandom(20000))])
    with pytest.raises(LayerError):
        extract(data[: 512 * 20], tmp_path / "dest")
    with pytest.raises(LayerError):
        extract(b"\x1f\x8b" + b"garbage" * 50, tmp_path / "dest")
    assert os.listdir(tmp_path) == []


def test_dest_must_be_empty(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "existing").write_bytes(b"keep")
    with pytest.raises(LayerError, match="not empty"):
        extract(make_tar([reg("f")]), dest)
    assert os.listdir(dest) == ["existing"]
    assert sorted(os.listdir(tmp_path)) == ["dest"]
