"""Lazy pulling without a registry or a mount: a skeleton made from a TOC is the extracted layer but for its file
data; the fetcher reads only a file's own gzip members, verifies them, caches the file and answers EIO (with one
log line) for a file whose chunk does not match; the cache is bounded and never names a partial file."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import stat
import time
from pathlib import Path

import pytest

from imagebuild.errors import BuildError
from imagebuild.layer import estargz as esgz
from imagebuild.layer import extract_layer_tar
from imagebuild.lazy.cache import FileCache, lazy_leftovers, parse_size
from imagebuild.lazy.fetcher import RegistryFetcher
from imagebuild.lazy.skeleton import make_skeleton
from tests.unit.test_estargz import convert, layer, plain_tar
from unionfs import FETCH_XATTR

LAYER = "sha256:" + "ab" * 32


def shape(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry's type, mode, owner, size, link target, rdev, inode group and xattrs; no file data."""
    found: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        rel = str(path.relative_to(root))
        xattrs = {} if stat.S_ISLNK(st.st_mode) else {n: os.getxattr(path, n) for n in os.listxattr(path)}
        xattrs.pop(FETCH_XATTR, None)
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
        size = st.st_size if stat.S_ISREG(st.st_mode) else None
        first = inodes.setdefault(st.st_ino, rel)
        found[rel] = (st.st_mode, st.st_uid, st.st_gid, size, target, st.st_rdev, first, st.st_mtime_ns, xattrs)
    return found


def estargz_layer(tmp_path: Path) -> tuple[bytes, esgz.Toc]:
    root = layer(tmp_path)
    (root / ".wh.gone").write_bytes(b"")
    blob, _ = convert(plain_tar(root))
    return blob, esgz.read_toc(io.BytesIO(blob), len(blob))


def test_a_skeleton_is_the_extracted_layer_with_placeholders_for_data(tmp_path: Path) -> None:
    blob, toc = estargz_layer(tmp_path)
    make_skeleton(toc, LAYER, str(tmp_path / "skeleton"))
    rootless = os.geteuid() != 0
    form = "file" if rootless else "chardev"
    extract_layer_tar(io.BytesIO(gzip.decompress(blob)), str(tmp_path / "whole"), whiteout_form=form, rootless=rootless)
    assert shape(tmp_path / "skeleton") == shape(tmp_path / "whole")
    big = tmp_path / "skeleton" / "big"
    assert os.getxattr(big, FETCH_XATTR) == LAYER.encode() + b"\0big"
    fd = os.open(big, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as hole:  # sparse: no data here
            os.lseek(fd, 0, os.SEEK_DATA)
        assert hole.value.errno == errno.ENXIO
    finally:
        os.close(fd)
    assert FETCH_XATTR not in os.listxattr(tmp_path / "skeleton" / "etc" / "empty")  # nothing to fetch
    assert (tmp_path / "skeleton" / esgz.TOC_NAME).read_bytes() == toc.raw


class FakeClient:
    """The registry client's range reads, over a blob in memory, counted."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.ranges: list[tuple[int, int]] = []

    def get_range(self, _repo: str, digest: str, start: int, length: int) -> bytes:
        assert digest == LAYER
        self.ranges.append((start, length))
        return self.blob[start : start + length]


def fetcher(tmp_path: Path, blob: bytes, toc: esgz.Toc, limit: int = 1 << 30) -> tuple[RegistryFetcher, FakeClient]:
    tocs = tmp_path / "tocs"
    tocs.mkdir(exist_ok=True)
    (tocs / (LAYER.removeprefix("sha256:") + ".json")).write_bytes(toc.raw)
    spec = {
        "registry": "registry.invalid",
        "insecure": True,
        "repository": "app",
        "cache": str(tmp_path / "files"),
        "cache_limit": limit,
        "tocs": str(tocs),
        "log": str(tmp_path / "log"),
        "layers": {LAYER: {"size": len(blob), "toc_offset": toc.offset, "toc_digest": toc.digest}},
    }
    made = RegistryFetcher(json.loads(json.dumps(spec)))
    client = FakeClient(blob)
    made.client = client  # type: ignore[assignment]
    return made, client


def read_fd(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as f:
        return f.read()


def test_the_fetcher_reads_only_a_files_members_and_caches_it(tmp_path: Path) -> None:
    blob, toc = estargz_layer(tmp_path)
    fetch, client = fetcher(tmp_path, blob, toc)
    assert read_fd(fetch.open(LAYER.encode() + b"\0etc/hostname")) == b"box\n"
    (only,) = client.ranges
    assert only[0] == toc.entry("etc/hostname")["offset"] and only[1] < 200
    big = (tmp_path / "layer" / "big").read_bytes()
    assert read_fd(fetch.open(LAYER.encode() + b"\0big")) == big
    assert len(client.ranges) == 1 + len(toc.chunks("big"))
    assert read_fd(fetch.open(LAYER.encode() + b"\0big")) == big  # from the cache: nothing fetched
    assert len(client.ranges) == 1 + len(toc.chunks("big"))


def test_a_chunk_that_does_not_match_is_eio_for_its_file_alone(tmp_path: Path) -> None:
    blob, toc = estargz_layer(tmp_path)
    second = toc.chunks("big")[1]
    bad = bytearray(blob)
    bad[second.offset + 12] ^= 0xFF
    fetch, _ = fetcher(tmp_path, bytes(bad), toc)
    with pytest.raises(OSError) as caught:
        fetch.open(LAYER.encode() + b"\0big")
    assert caught.value.errno == errno.EIO
    (line,) = (tmp_path / "log").read_text().splitlines()
    assert "/big" in line and "answered EIO" in line
    assert read_fd(fetch.open(LAYER.encode() + b"\0etc/hostname")) == b"box\n"
    names = os.listdir(tmp_path / "files")
    assert toc.entry("etc/hostname")["digest"].removeprefix("sha256:") in names
    # nothing of big under its name, not even a temporary file (its first, good chunk's member is kept)
    assert toc.entry("big")["digest"].removeprefix("sha256:") not in names
    assert not [n for n in names if n.startswith(".tmp-")]


def test_the_cache_keeps_to_its_limit_least_recently_used_first(tmp_path: Path) -> None:
    cache = FileCache(str(tmp_path / "files"), limit=250)
    for n, name in enumerate(("sha256:aa", "sha256:bb", "sha256:cc")):
        os.close(cache.put(name, lambda fd: os.write(fd, b"x" * 100)))
        os.utime(cache.path(name), ns=(n * 10**9, n * 10**9))
    assert sorted(os.listdir(tmp_path / "files")) == ["bb", "cc"]
    now = time.time_ns()
    os.utime(cache.path("sha256:bb"), ns=(now, now))
    os.close(cache.put("sha256:dd", lambda fd: os.write(fd, b"x" * 100)))
    assert sorted(os.listdir(tmp_path / "files")) == ["bb", "dd"]


def test_a_failed_write_leaves_no_file_and_a_crashed_one_is_a_leftover(tmp_path: Path) -> None:
    cache = FileCache(str(tmp_path / "lazy" / "files"))

    def broken(fd: int) -> None:
        os.write(fd, b"half")
        raise OSError(errno.EIO, "dropped")

    with pytest.raises(OSError):
        cache.put("sha256:aa", broken)
    assert os.listdir(tmp_path / "lazy" / "files") == []
    (tmp_path / "lazy" / "files" / ".tmp-crashed").write_bytes(b"half")
    assert lazy_leftovers(str(tmp_path / "lazy")) == [str(tmp_path / "lazy" / "files" / ".tmp-crashed")]


def test_cache_sizes() -> None:
    assert parse_size("2G") == 2 << 30 and parse_size("500M") == 500 << 20 and parse_size("123") == 123
    assert parse_size("64KiB") == 64 << 10
    with pytest.raises(BuildError):
        parse_size("lots")


def test_files_before_the_prefetch_landmark_are_fetched_in_the_background(tmp_path: Path) -> None:
    blob, toc = estargz_layer(tmp_path)
    big = toc.entry("big")
    # as another tool lays a layer out: the files to read first, then the landmark (here: before `big`)
    entries = [*toc.entries, {"name": esgz.PREFETCH_LANDMARK, "type": "reg", "size": 1, "offset": big["offset"]}]
    raw = json.dumps({"version": 1, "entries": entries}).encode()
    crafted = esgz.Toc(toc.offset, "sha256:" + hashlib.sha256(raw).hexdigest(), entries, raw)
    fetch, client = fetcher(tmp_path, blob, crafted)
    thread = fetch.prefetch()
    assert thread is not None
    thread.join(30)
    before = {e["name"] for e in entries if e.get("size") and e["offset"] < big["offset"] and e["type"] == "reg"}
    assert before and "big" not in before
    cached = {n for n in os.listdir(tmp_path / "files") if not n.startswith("m-")}
    assert cached == {toc.entry(name)["digest"].removeprefix("sha256:") for name in before}
    assert all(start < big["offset"] for start, _ in client.ranges)


def test_a_toc_digest_that_is_no_digest_names_no_path(tmp_path: Path) -> None:
    blob, toc = estargz_layer(tmp_path)
    (tmp_path / "secret").write_text("a host file\n")  # beside the cache: what `../secret` would name
    entries = [e | {"digest": "sha256:../secret"} if e.get("name") == "big" else e for e in toc.entries]
    raw = json.dumps({"version": 1, "entries": entries}).encode()
    crafted = esgz.Toc(toc.offset, "sha256:" + hashlib.sha256(raw).hexdigest(), entries, raw)
    fetch, _ = fetcher(tmp_path, blob, crafted)
    with pytest.raises(OSError) as caught:
        fetch.open(LAYER.encode() + b"\0big")
    assert caught.value.errno == errno.EIO
