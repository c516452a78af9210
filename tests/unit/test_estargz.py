"""eStargz: the blob is the layer's tar in per-file gzip members, with a TOC and a footer a reader finds from the
end; every chunk is checked against the TOC's digest, and ordinary gzip readers see an ordinary layer tar."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from imagebuild.layer import LayerError, write_layer_tar
from imagebuild.layer import estargz as esgz

CHUNK = 1000


def layer(tmp_path: Path) -> Path:
    root = tmp_path / "layer"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("box\n")
    (root / "etc" / "empty").write_bytes(b"")
    (root / "big").write_bytes(os.urandom(3 * CHUNK + 17))
    (root / "exact").write_bytes(b"x" * (2 * CHUNK))
    os.symlink("etc/hostname", root / "link")
    os.link(root / "etc" / "hostname", root / "hard")
    os.setxattr(root / "etc" / "hostname", "user.note", b"\xff\x00bin")
    for path in root.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    return root


def plain_tar(root: Path) -> bytes:
    out = io.BytesIO()
    write_layer_tar(str(root), out, mtime_clamp=None)
    return out.getvalue()


def convert(tar: bytes, chunk_size: int = CHUNK) -> tuple[bytes, esgz.Written]:
    out = io.BytesIO()
    written = esgz.write_estargz(io.BytesIO(tar), out, chunk_size=chunk_size)
    return out.getvalue(), written


class Counting(io.BytesIO):
    """A blob that records every seek and every range read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[tuple[int, int]] = []
        self.seeks: list[int] = []

    def seek(self, offset: int, whence: int = 0, /) -> int:
        position = super().seek(offset, whence)
        self.seeks.append(position)
        return position

    def read(self, size: int | None = -1, /) -> bytes:
        start = self.tell()
        data = super().read(size)
        self.reads.append((start, len(data)))
        return data


def members(blob: bytes) -> list[int]:
    """The offsets where gzip members start, found by decompressing the blob member by member."""
    offsets, pos = [], 0
    while pos < len(blob):
        offsets.append(pos)
        z = zlib.decompressobj(31)
        z.decompress(blob[pos:])
        pos = len(blob) - len(z.unused_data)
    return offsets


def test_gzip_readers_see_the_layer_tar_with_a_landmark_first_and_the_toc_last(tmp_path: Path) -> None:
    tar = plain_tar(layer(tmp_path))
    blob, written = convert(tar)
    plain = gzip.decompress(blob)
    assert written.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert written.uncompressed_size == len(plain)
    assert written.digest == "sha256:" + hashlib.sha256(blob).hexdigest() and written.size == len(blob)
    with tarfile.open(fileobj=io.BytesIO(plain)) as t:
        names = t.getnames()
        assert t.extractfile(esgz.NO_PREFETCH_LANDMARK).read() == b"\x0f"  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        original = t.getnames()
        last = t.getmembers()[-1]
        end = last.offset_data + -(-last.size // 512) * 512
    assert names == [esgz.NO_PREFETCH_LANDMARK, *original, esgz.TOC_NAME]
    # the layer's own entries are there byte for byte, after the landmark's two blocks
    assert plain[1024 : 1024 + end] == tar[:end]


def test_the_toc_is_found_from_the_last_bytes_alone(tmp_path: Path) -> None:
    blob, written = convert(plain_tar(layer(tmp_path)))
    counting = Counting(blob)
    toc = esgz.read_toc(counting, len(blob))
    assert counting.seeks == [len(blob) - esgz.FOOTER_SIZE, toc.offset]  # the footer first, then straight to the TOC
    assert counting.reads[0] == (len(blob) - esgz.FOOTER_SIZE, esgz.FOOTER_SIZE)
    assert all(start >= toc.offset for start, _ in counting.reads)
    assert sum(n for _, n in counting.reads) == len(blob) - toc.offset
    assert toc.digest == written.toc_digest
    assert esgz.parse_footer(blob[-esgz.FOOTER_SIZE :]) == toc.offset
    assert members(blob)[-2:] == [toc.offset, len(blob) - esgz.FOOTER_SIZE]


def test_every_chunk_has_its_own_member_and_matches_its_digest(tmp_path: Path) -> None:
    root = layer(tmp_path)
    blob, _ = convert(plain_tar(root))
    toc = esgz.verify(io.BytesIO(blob), len(blob), None)
    starts = set(members(blob))
    for name, chunks in (("big", 4), ("exact", 2), ("etc/hostname", 1), ("etc/empty", 0)):
        found = toc.chunks(name)
        assert len(found) == chunks, name
        content = (root / name).read_bytes()
        assert b"".join(esgz.read_chunk(io.BytesIO(blob), c) for c in found) == content
        for c in found:
            assert c.offset in starts
            assert c.digest == "sha256:" + hashlib.sha256(content[c.chunk_offset : c.chunk_offset + c.size]).hexdigest()
        assert toc.entry(name)["digest"] == "sha256:" + hashlib.sha256(content).hexdigest()
    assert toc.chunk_at("big", 0).chunk_offset == 0
    assert toc.chunk_at("big", 2 * CHUNK + 5).chunk_offset == 2 * CHUNK
    assert toc.chunk_at("big", 3 * CHUNK + 16).size == 17
    with pytest.raises(LayerError, match="past the end"):
        toc.chunk_at("big", 3 * CHUNK + 17)


def test_toc_entries_have_the_estargz_fields(tmp_path: Path) -> None:
    blob, _ = convert(plain_tar(layer(tmp_path)))
    toc = esgz.read_toc(io.BytesIO(blob), len(blob))
    by_name: dict[str, dict[str, Any]] = {e["name"]: e for e in toc.entries if e["type"] != "chunk"}
    assert by_name["etc/"]["type"] == "dir" and by_name["etc/"]["mode"] == 0o755
    assert by_name["link"] == {
        "name": "link",
        "type": "symlink",
        "modtime": "2023-11-14T22:13:20Z",
        "linkName": "etc/hostname",
        "mode": 0o777,
    }
    assert by_name["hard"]["type"] == "hardlink" and by_name["hard"]["linkName"] == "etc/hostname"
    hostname = by_name["etc/hostname"]
    assert hostname["size"] == 4 and "chunkSize" not in hostname
    assert hostname["xattrs"] == {"user.note": "/wBiaW4="}  # base64 of the raw bytes, as Go writes []byte
    big = [e for e in toc.entries if e["name"] == "big"]
    assert [e["type"] for e in big] == ["reg", "chunk", "chunk", "chunk"]
    assert [e.get("chunkSize", 0) for e in big] == [CHUNK, CHUNK, CHUNK, 0]
    assert [e.get("chunkOffset", 0) for e in big] == [0, CHUNK, 2 * CHUNK, 3 * CHUNK]
    landmark = toc.entries[0]
    assert landmark["name"] == esgz.NO_PREFETCH_LANDMARK and landmark["size"] == 1
    assert toc.prefetch_end() is None
    assert esgz.TOC_NAME not in by_name


def test_a_corrupt_chunk_is_named_and_the_others_still_read(tmp_path: Path) -> None:
    blob, written = convert(plain_tar(layer(tmp_path)))
    toc = esgz.read_toc(io.BytesIO(blob), len(blob))
    victim = toc.chunks("big")[1]
    bad = bytearray(blob)
    bad[victim.offset + 20] ^= 0xFF
    with pytest.raises(LayerError, match="big: chunk"):
        esgz.verify(io.BytesIO(bytes(bad)), len(bad), written.toc_digest)
    assert esgz.read_chunk(io.BytesIO(bytes(bad)), toc.chunks("big")[2])
    assert esgz.read_chunk(io.BytesIO(bytes(bad)), toc.chunks("etc/hostname")[0]) == b"box\n"


def test_the_toc_digest_annotation_is_checked(tmp_path: Path) -> None:
    blob, written = convert(plain_tar(layer(tmp_path)))
    assert written.annotations() == {
        esgz.TOC_DIGEST_ANNOTATION: written.toc_digest,
        esgz.UNCOMPRESSED_SIZE_ANNOTATION: str(written.uncompressed_size),
    }
    with pytest.raises(LayerError, match="annotation"):
        esgz.verify(io.BytesIO(blob), len(blob), "sha256:" + "0" * 64)


def test_the_same_layer_gives_the_same_blob(tmp_path: Path) -> None:
    tar = plain_tar(layer(tmp_path))
    assert convert(tar) == convert(tar)


def test_the_footer_is_the_51_byte_empty_member_the_format_defines() -> None:
    data = esgz.footer(0x1234)
    assert len(data) == esgz.FOOTER_SIZE
    assert gzip.decompress(data) == b""
    assert data[10:12] == (26).to_bytes(2, "little") and data[12:16] == b"SG\x16\x00"
    assert data[16:38] == b"0000000000001234STARGZ"
    assert esgz.parse_footer(data) == 0x1234


def test_an_ordinary_gzip_layer_is_not_taken_for_estargz(tmp_path: Path) -> None:
    tar = plain_tar(layer(tmp_path))
    blob = gzip.compress(tar, mtime=0)
    with pytest.raises(LayerError, match="no eStargz footer"):
        esgz.read_toc(io.BytesIO(blob), len(blob))


def test_a_tar_that_is_estargz_already_is_refused(tmp_path: Path) -> None:
    blob, _ = convert(plain_tar(layer(tmp_path)))
    with pytest.raises(LayerError, match="eStargz already"):
        convert(gzip.decompress(blob))


def test_a_prefetch_landmark_marks_where_the_files_to_fetch_first_end(tmp_path: Path) -> None:
    """Other tools write `.prefetch.landmark` after the files a workload reads first: we find the boundary."""
    blob, _ = convert(plain_tar(layer(tmp_path)))
    toc = esgz.read_toc(io.BytesIO(blob), len(blob))
    landmark = esgz.NO_PREFETCH_LANDMARK
    entries = [dict(e, name=esgz.PREFETCH_LANDMARK) if e["name"] == landmark else e for e in toc.entries]
    raw = json.dumps({"version": 1, "entries": entries}).encode()
    header = tarfile.TarInfo(esgz.TOC_NAME)
    header.size = len(raw)
    member = gzip.compress(header.tobuf() + raw + b"\0" * (-len(raw) % 512 + 1024), mtime=0)
    rebuilt = blob[: toc.offset] + member + esgz.footer(toc.offset)
    again = esgz.verify(io.BytesIO(rebuilt), len(rebuilt), "sha256:" + hashlib.sha256(raw).hexdigest())
    assert again.prefetch_end() == toc.entries[0]["offset"]


def go_style_blob(files: dict[str, bytes]) -> tuple[bytes, str]:
    """An eStargz blob laid out as other tools may write it: gzip members from another writer (OS byte 255), a
    root-owned mode-0 landmark, older fields (`NumLink`), and small files packed into one member (`innerOffset`,
    as ctr-remote's --estargz-min-chunk-size does). Returns the blob and its TOC digest."""

    def header(name: str, size: int, mode: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mode = size, mode
        return info.tobuf(tarfile.USTAR_FORMAT)

    def pad(n: int) -> bytes:
        return b"\0" * (-n % 512)

    first = gzip.compress(header(esgz.NO_PREFETCH_LANDMARK, 1, 0), mtime=0)
    packed = b"\x0f" + pad(1)
    entries: list[dict[str, Any]] = [
        {"name": esgz.NO_PREFETCH_LANDMARK, "type": "reg", "size": 1, "offset": len(first), "NumLink": 0,
         "digest": "sha256:" + hashlib.sha256(b"\x0f").hexdigest(),
         "chunkDigest": "sha256:" + hashlib.sha256(b"\x0f").hexdigest()},
    ]  # fmt: skip
    for name, data in files.items():
        packed += header(name, len(data), 0o644)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        entry = {"name": name, "type": "reg", "size": len(data), "mode": 0o644, "offset": len(first), "NumLink": 0}
        entries.append(entry | {"innerOffset": len(packed), "digest": digest, "chunkDigest": digest})
        packed += data + pad(len(data))
    body = first + gzip.compress(packed, mtime=0)
    raw = json.dumps({"version": 1, "entries": entries}, indent="\t").encode()
    toc = gzip.compress(header(esgz.TOC_NAME, len(raw), 0) + raw + pad(len(raw)) + b"\0" * 1024, mtime=0)
    return body + toc + esgz.footer(len(body)), "sha256:" + hashlib.sha256(raw).hexdigest()


def test_files_packed_into_one_member_by_other_tools_are_read_by_their_inner_offset() -> None:
    files = {"a.txt": b"first file\n", "dir/b.bin": os.urandom(700), "c": b"third"}
    blob, toc_digest = go_style_blob(files)
    assert gzip.decompress(blob)  # an ordinary gzip stream to every reader
    toc = esgz.verify(io.BytesIO(blob), len(blob), toc_digest)
    for name, data in files.items():
        (chunk,) = toc.chunks(name)
        assert chunk.inner_offset > 0
        assert esgz.read_chunk(io.BytesIO(blob), chunk) == data
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        assert t.getnames() == [esgz.NO_PREFETCH_LANDMARK, *files, esgz.TOC_NAME]
