"""Parallel gzip (imagebuild/layer/gzipped.py): one standard gzip stream, the same bytes however many threads."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from imagebuild.layer.gzipped import BLOCK, GzipWriter, compress_gzip


def gzipped(data: bytes, workers: int | None = None, pieces: int = 1) -> bytes:
    out = io.BytesIO()
    with GzipWriter(out, workers=workers) as gz:
        step = max(1, len(data) // pieces)
        for start in range(0, len(data), step):
            gz.write(data[start : start + step])
    assert (gz.digest, gz.size) == ("sha256:" + hashlib.sha256(out.getvalue()).hexdigest(), len(out.getvalue()))
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK, 3 * BLOCK + 12345])
def test_every_reader_takes_it(size: int, tmp_path: Path) -> None:
    data = (os.urandom(4096) + bytes(range(256)) * 64) * (size // 20480 + 1)
    data = data[:size]
    blob = gzipped(data)
    assert gzip.decompress(blob) == data
    if shutil.which("gzip"):
        (tmp_path / "layer.gz").write_bytes(blob)
        tested = subprocess.run(["gzip", "-t", str(tmp_path / "layer.gz")], capture_output=True, text=True)
        assert tested.returncode == 0, tested.stderr
        assert subprocess.run(["gzip", "-dc", str(tmp_path / "layer.gz")], capture_output=True).stdout == data


def test_same_bytes_whatever_the_threads_and_writes() -> None:
    data = os.urandom(300_000) * 10 + b"tail"
    first = gzipped(data, workers=1)
    assert gzipped(data, workers=2) == first
    assert gzipped(data, workers=5, pieces=7) == first
    assert gzipped(data, workers=3, pieces=len(data) // 1000) == first
    src = io.BytesIO(data)
    out = io.BytesIO()
    assert compress_gzip(src, out) == ("sha256:" + hashlib.sha256(first).hexdigest(), len(first))
    assert out.getvalue() == first


def test_blocks_reach_back_across_the_cut() -> None:
    """Each block is deflated with the previous block's end as its dictionary: data that repeats across a cut
    compresses as well as in one stream (without the dictionary each block would pay for its first 8 KiB)."""
    pattern = os.urandom(8192)
    data = pattern * (8 * BLOCK // len(pattern))
    blob = gzipped(data)
    assert len(blob) < len(gzip.compress(data, mtime=0)) * 1.1
    assert len(blob) < 8 * len(pattern)


def test_header_names_nothing_and_has_no_time() -> None:
    blob = gzipped(b"x" * 100)
    assert blob[:3] == b"\x1f\x8b\x08"
    assert blob[3] == 0  # no FNAME, no FEXTRA, no comment
    assert blob[4:8] == b"\0\0\0\0"  # mtime 0
