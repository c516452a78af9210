"""The content-addressed blob store: crash-safe writes, verified reads, strict digests."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import pytest

from imagebuild.store.blobs import BlobError, BlobInfo, BlobStore


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


def test_put_and_read_back(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # several chunks
    info = store.put(io.BytesIO(data))
    assert info == BlobInfo(sha(data), len(data))
    assert store.has(info.digest)
    assert store.path(info.digest) == str(tmp_path / "store" / "blobs" / "sha256" / info.digest[7:])
    assert Path(store.path(info.digest)).read_bytes() == data
    with store.open(info.digest) as stream:
        assert stream.read() == data
    assert store.read_bytes(info.digest, expected_size=len(data)) == data
    assert store.size(info.digest) == len(data)
    assert store.verify(info.digest) == info
    assert os.listdir(tmp_path / "store" / "tmp") == []


def test_put_is_idempotent(store: BlobStore) -> None:
    first = store.put_bytes(b"same")
    inode = os.stat(store.path(first.digest)).st_ino
    second = store.put(io.BytesIO(b"same"))
    assert first == second
    assert os.stat(store.path(first.digest)).st_ino == inode
    assert list(store.iter_digests()) == [first.digest]


def test_expected_digest_and_size_mismatch_store_nothing(store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(BlobError, match="expected"):
        store.put_bytes(b"actual", expected_digest=sha(b"promised"))
    with pytest.raises(BlobError, match="expected 99"):
        store.put(io.BytesIO(b"actual"), expected_size=99)
    assert list(store.iter_digests()) == []
    assert os.listdir(tmp_path / "store" / "tmp") == []
    assert store.put_bytes(b"ok", expected_digest=sha(b"ok")).digest == sha(b"ok")


def test_failing_source_leaves_no_temp_file(store: BlobStore, tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
            self.calls += 1
            if self.calls > 2:
                raise OSError("network went away")
            buffer[:4] = b"data"
            return 4

    with pytest.raises(OSError, match="network"):
        store.put(io.BufferedReader(Broken(), 4))
    assert os.listdir(tmp_path / "store" / "tmp") == []
    assert list(store.iter_digests()) == []


def corrupt(path: str, data: bytes) -> None:
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(data)


def test_verify_detects_corruption(store: BlobStore) -> None:
    info = store.put_bytes(b"hello world")
    corrupt(store.path(info.digest), b"hellO world")
    with pytest.raises(BlobError, match="does not match"):
        store.verify(info.digest)
    with store.open(info.digest) as stream, pytest.raises(BlobError, match="does not match"):
        stream.read()
    # without verification the bytes come back as they are
    with store.open(info.digest, verify=False) as stream:
        assert stream.read() == b"hellO world"


def test_reader_detects_truncation_at_eof(store: BlobStore) -> None:
    data = os.urandom(100_000)
    info = store.put_bytes(data)
    corrupt(store.path(info.digest), data[:60_000])
    with store.open(info.digest) as stream:
        assert stream.read(50_000) == data[:50_000]  # nothing can be known before the end
        with pytest.raises(BlobError):
            while stream.read(4096):
                pass
    with pytest.raises(BlobError, match="truncated"):
        store.verify(info.digest, expected_size=len(data))


def test_reader_checks_expected_size(store: BlobStore) -> None:
    info = store.put_bytes(b"0123456789")
    with pytest.raises(BlobError, match="longer"), store.open(info.digest, expected_size=5) as stream:
        stream.read()
    with pytest.raises(BlobError, match="truncated"), store.open(info.digest, expected_size=11) as stream:
        stream.read()
    with store.open(info.digest, expected_size=10) as stream:
        assert stream.read() == b"0123456789"


BAD_DIGESTS = [
    "",
    "sha256:",
    "sha256:" + "A" * 64,
    "sha256:" + "a" * 63,
    "sha256:" + "a" * 65,
    "sha512:" + "a" * 128,
    "md5:d41d8cd98f00b204e9800998ecf8427e",
    "a" * 64,
    "sha256:../../../../etc/passwd",
    "sha256:" + "a" * 62 + "/x",
]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_bad_digests_are_refused(store: BlobStore, digest: str) -> None:
    for call in (store.path, store.has, store.open, store.delete, store.verify, store.size):
        with pytest.raises(BlobError, match="digest"):
            call(digest)
    with pytest.raises(BlobError, match="digest"):
        store.put_bytes(b"x", expected_digest=digest)


def test_missing_blob(store: BlobStore) -> None:
    digest = sha(b"never stored")
    assert not store.has(digest)
    with pytest.raises(BlobError, match="not found"):
        store.open(digest)
    with pytest.raises(BlobError, match="not found"):
        store.size(digest)
    assert store.delete(digest) is False


def test_delete(store: BlobStore) -> None:
    info = store.put_bytes(b"bye")
    assert store.delete(info.digest) is True
    assert not store.has(info.digest)
    assert list(store.iter_digests()) == []


def test_crash_leftovers_are_ignored_and_cleaned(store: BlobStore, tmp_path: Path) -> None:
    a = store.put_bytes(b"a")
    b = store.put_bytes(b"b")
    root = tmp_path / "store"
    stale = root / "tmp" / "blob-dead.tmp"
    stale.write_bytes(b"half a bl")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = root / "tmp" / "blob-busy.tmp"
    fresh.write_bytes(b"being written")
    (root / "blobs" / "sha256" / "not-a-digest").write_bytes(b"?")
    (root / "blobs" / "sha256" / ("0" * 64 + ".partial")).write_bytes(b"?")
    os.mkdir(root / "blobs" / "sha256" / ("f" * 64))  # a directory with a digest name is no blob

    assert list(store.iter_digests()) == sorted([a.digest, b.digest])
    assert store.clean_tmp(older_than=3600) == 1
    assert not stale.exists() and fresh.exists()
    # a store reopened over the same root sees the same blobs
    assert list(BlobStore(root).iter_digests()) == sorted([a.digest, b.digest])


def test_blobs_are_read_only_files(store: BlobStore) -> None:
    info = store.put_bytes(b"immutable")
    assert os.stat(store.path(info.digest)).st_mode & 0o222 == 0
