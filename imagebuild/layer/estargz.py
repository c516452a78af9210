"""eStargz: a layer tar as a seekable gzip blob that every gzip reader still reads as an ordinary layer.

The form (stargz-snapshotter's docs/estargz.md) is a concatenation of gzip members:
- The tar stream is the layer's own entries, byte for byte, with two more regular files: the landmark
  `.no.prefetch.landmark` (one byte 0x0f) first, and the table of contents `stargz.index.json` last, followed by
  the tar's end (two zero blocks). `.prefetch.landmark` in its place instead marks the end of the files to fetch
  first; we write the no-prefetch form and read both.
- A gzip member starts at the top of the blob, at the payload of every non-empty regular file, at each chunk of a
  large file (every `chunk_size` bytes of its payload), and at the TOC's tar header. So one file's data (or one
  chunk of it) is decompressed from its own offset without reading anything before it.
- The TOC is JSON: `{"version": 1, "entries": [...]}`, one entry per tar entry (names as in the tar, directories
  with a trailing `/`) and one per further chunk, with `offset` (of the chunk's gzip member in the blob),
  `chunkOffset`, `chunkSize` (0 for a file's last chunk) and `chunkDigest` (sha256 of the chunk's bytes); a
  regular file's first entry has its `size` and `digest` (of the whole file). xattrs are base64, as Go's JSON
  writes bytes.
- The footer: a 51-byte empty gzip member whose Extra field holds the TOC's offset as `%016x` + `STARGZ` (subfield
  `SG`). A reader finds the TOC by reading the last 51 bytes.
- The layer's descriptor carries the TOC's digest (sha256 of its JSON) in `containerd.io/snapshot/stargz/toc.digest`,
  which is what makes the TOC, and through its chunk digests every chunk, verifiable; and the uncompressed size in
  `io.containers.estargz.uncompressed-size`.

Because the landmark and the TOC are entries of the tar, an eStargz layer's diff_id is not the diff_id of the
plain tar it was made from: an image converted to eStargz has its own config (rootfs.diff_ids), and any client
that extracts the layer (docker, umoci, a pull) finds the two files in the root, as the format intends.

Everything here is deterministic (fixed gzip level, no timestamps), so one layer always gives the same blob.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from imagebuild.layer.errors import LayerError

TOC_NAME = "stargz.index.json"
PREFETCH_LANDMARK = ".prefetch.landmark"
NO_PREFETCH_LANDMARK = ".no.prefetch.landmark"
LANDMARK_CONTENTS = b"\x0f"
TOC_DIGEST_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest"
UNCOMPRESSED_SIZE_ANNOTATION = "io.containers.estargz.uncompressed-size"
FOOTER_SIZE = 51
CHUNK_SIZE = 4 << 20  # stargz-snapshotter's default
GZIP_LEVEL = 6
_BLOCK = tarfile.BLOCKSIZE
_COPY = 1 << 20
_FOOTER_RE = re.compile(rb"([0-9a-f]{16})STARGZ")


# -- writing ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """What a layer's descriptor and config need to know of an eStargz blob just written."""

    digest: str  # sha256 of the blob
    size: int
    diff_id: str  # sha256 of the uncompressed tar (landmark and TOC included)
    uncompressed_size: int
    toc_digest: str

    def annotations(self) -> dict[str, str]:
        return {TOC_DIGEST_ANNOTATION: self.toc_digest, UNCOMPRESSED_SIZE_ANNOTATION: str(self.uncompressed_size)}


class _Members:
    """Writes gzip members to `out`, counting and hashing both the compressed and the uncompressed bytes."""

    def __init__(self, out: BinaryIO, level: int) -> None:
        self._out = out
        self._level = level
        self._z: Any = None
        self.offset = 0  # compressed bytes written so far
        self.blob_hash = hashlib.sha256()
        self.tar_hash = hashlib.sha256()
        self.tar_size = 0

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self.blob_hash.update(data)
            self.offset += len(data)

    def close_member(self) -> None:
        if self._z is not None:
            self._emit(self._z.flush())
            self._z = None

    def new_member(self) -> int:
        """End the current member and start another; returns the offset it starts at."""
        self.close_member()
        self._z = zlib.compressobj(self._level, zlib.DEFLATED, 31)
        return self.offset

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._z is None:
            self.new_member()
        self.tar_hash.update(data)
        self.tar_size += len(data)
        self._emit(self._z.compress(data))

    def raw(self, data: bytes) -> None:
        """Bytes written outside any member (the footer): counted in the blob, not in the tar."""
        self.close_member()
        self._emit(data)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def _modtime(mtime: float) -> str | None:
    if not mtime:
        return None
    return datetime.fromtimestamp(round(mtime), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_TYPES = {
    tarfile.DIRTYPE: "dir",
    tarfile.REGTYPE: "reg",
    tarfile.AREGTYPE: "reg",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


def _entry(info: tarfile.TarInfo) -> dict[str, Any]:
    """The TOC entry of a tar header, with Go's field order and its `omitempty` rules."""
    kind = _TYPES.get(info.type)
    if kind is None:
        raise LayerError(f"{info.name}: tar entry type {info.type!r} has no eStargz form")
    name = info.name + "/" if kind == "dir" and not info.name.endswith("/") else info.name
    entry: dict[str, Any] = {"name": name, "type": kind}
    if kind == "reg" and info.size:
        entry["size"] = info.size
    optional: dict[str, Any] = {
        "modtime": _modtime(info.mtime),
        "linkName": info.linkname if kind in ("symlink", "hardlink") else None,
        "mode": info.mode,
        "uid": info.uid,
        "gid": info.gid,
        "userName": info.uname,
        "groupName": info.gname,
    }
    entry.update((k, v) for k, v in optional.items() if v)
    if kind in ("char", "block"):
        entry["devMajor"], entry["devMinor"] = info.devmajor, info.devminor
    xattrs = {
        key.removeprefix("SCHILY.xattr."): base64.b64encode(value.encode("utf-8", "surrogateescape")).decode()
        for key, value in sorted(info.pax_headers.items())
        if key.startswith("SCHILY.xattr.")
    }
    if xattrs:
        entry["xattrs"] = xattrs
    return entry


def _simple_header(name: str, size: int) -> bytes:
    """The header of a file we add (landmark, TOC): a root-owned 0644 regular file with no time."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def _open_tar(tar: BinaryIO) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=tar, mode="r:", encoding="utf-8", errors="surrogateescape")
    except tarfile.TarError as exc:
        raise LayerError(f"not a tar: {exc}") from None


def write_estargz(tar: BinaryIO, out: BinaryIO, *, chunk_size: int = CHUNK_SIZE, level: int = GZIP_LEVEL) -> Written:
    """Write the uncompressed layer tar `tar` (seekable) to `out` as eStargz (see the module docstring).

    The entries keep their bytes exactly (headers, PAX records, data); the tar's own end is replaced by the TOC
    entry and a new end. LayerError for a tar that already holds a TOC or has an entry type eStargz lacks."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    members = _Members(out, level)
    entries: list[dict[str, Any]] = []
    _write_landmark(members, entries, NO_PREFETCH_LANDMARK)
    position = 0
    with _open_tar(tar) as archive:
        try:
            for info in archive:
                if info.name.rstrip("/") == TOC_NAME:
                    raise LayerError(f"the tar already holds a {TOC_NAME}: it is eStargz already")
                entry = _entry(info)
                members.write(_read_at(tar, position, info.offset_data - position))
                position = info.offset_data
                if entry["type"] == "reg":
                    _write_payload(members, tar, info, entry, entries, chunk_size)
                    position += info.size
                else:
                    entries.append(entry)
        except tarfile.TarError as exc:
            raise LayerError(f"unreadable tar: {exc}") from None
    members.write(_padding(position))  # the last payload's padding; the tar's own end is dropped
    toc = json.dumps({"version": 1, "entries": entries}, indent="\t", ensure_ascii=False).encode()
    toc_offset = members.new_member()
    members.write(_simple_header(TOC_NAME, len(toc)) + toc + _padding(len(toc)) + b"\0" * (2 * _BLOCK))
    members.raw(footer(toc_offset))
    return Written(
        digest="sha256:" + members.blob_hash.hexdigest(),
        size=members.offset,
        diff_id="sha256:" + members.tar_hash.hexdigest(),
        uncompressed_size=members.tar_size,
        toc_digest="sha256:" + hashlib.sha256(toc).hexdigest(),
    )


def _write_landmark(members: _Members, entries: list[dict[str, Any]], name: str) -> None:
    members.write(_simple_header(name, len(LANDMARK_CONTENTS)))
    offset = members.new_member()
    digest = "sha256:" + hashlib.sha256(LANDMARK_CONTENTS).hexdigest()
    members.write(LANDMARK_CONTENTS + _padding(len(LANDMARK_CONTENTS)))
    entries.append(
        {
            "name": name,
            "type": "reg",
            "size": len(LANDMARK_CONTENTS),
            "mode": 0o644,
            "offset": offset,
            "digest": digest,
            "chunkDigest": digest,
        }
    )


def _write_payload(
    members: _Members,
    tar: BinaryIO,
    info: tarfile.TarInfo,
    entry: dict[str, Any],
    entries: list[dict[str, Any]],
    chunk_size: int,
) -> None:
    """A regular file's data, one gzip member per chunk, and its TOC entries (the first is `entry`)."""
    whole = hashlib.sha256()
    first = entry
    tar.seek(info.offset_data)
    written = 0
    while written < info.size:
        size = min(chunk_size, info.size - written)
        if written:
            entry = {"name": first["name"], "type": "chunk"}
        entry["offset"] = members.new_member()
        if written:
            entry["chunkOffset"] = written
        if size == chunk_size and written + size < info.size:
            entry["chunkSize"] = size
        chunk = hashlib.sha256()
        left = size
        while left:
            data = tar.read(min(_COPY, left))
            if not data:
                raise LayerError(f"{info.name}: the tar ends inside the file's data")
            chunk.update(data)
            whole.update(data)
            members.write(data)
            left -= len(data)
        entry["chunkDigest"] = "sha256:" + chunk.hexdigest()
        entries.append(entry)
        written += size
    if not info.size:
        entries.append(first)
    first["digest"] = "sha256:" + whole.hexdigest()
    # Go's field order puts digest before the chunk fields; keep it so a TOC reads as theirs does.
    for key in ("chunkOffset", "chunkSize", "chunkDigest"):
        if key in first:
            first[key] = first.pop(key)


def _read_at(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise LayerError("the tar ends early")
    return data


def footer(toc_offset: int) -> bytes:
    """The 51-byte eStargz footer: an empty gzip member whose Extra field names the TOC's offset."""
    subfield = b"%016xSTARGZ" % toc_offset
    extra = b"SG" + struct.pack("<H", len(subfield)) + subfield
    header = b"\x1f\x8b\x08\x04" + b"\0\0\0\0" + b"\x00\xff" + struct.pack("<H", len(extra)) + extra
    return header + b"\x01\x00\x00\xff\xff" + b"\0" * 8


# -- reading ---------------------------------------------------------------------------------------------------------


def parse_footer(data: bytes) -> int:
    """The TOC offset a footer names; LayerError when `data` is not an eStargz footer."""
    if len(data) != FOOTER_SIZE or data[:3] != b"\x1f\x8b\x08" or not data[3] & 0x04:
        raise LayerError("no eStargz footer at the end of the blob")
    (xlen,) = struct.unpack("<H", data[10:12])
    extra = data[12 : 12 + xlen]
    if xlen != 26 or extra[:2] != b"SG" or struct.unpack("<H", extra[2:4])[0] != 22:
        raise LayerError("no eStargz footer at the end of the blob")
    match = _FOOTER_RE.fullmatch(extra[4:])
    if match is None:
        raise LayerError("no eStargz footer at the end of the blob")
    return int(match.group(1), 16)


@dataclass(frozen=True)
class Chunk:
    """Where one piece of a regular file's data lies: its gzip member in the blob and its place in the file."""

    name: str
    offset: int  # of the gzip member in the blob
    inner_offset: int  # of the chunk in that member's uncompressed bytes
    chunk_offset: int  # of the chunk in the file
    size: int
    digest: str


@dataclass(frozen=True)
class Toc:
    offset: int  # of the TOC's gzip member in the blob
    digest: str  # sha256 of its JSON, what the descriptor's annotation names
    entries: list[dict[str, Any]]
    raw: bytes = b""  # the JSON itself (the layer's stargz.index.json)

    def entry(self, name: str) -> dict[str, Any]:
        wanted = name.strip("/")
        for entry in self.entries:
            if entry.get("type") != "chunk" and str(entry.get("name", "")).strip("/") == wanted:
                return entry
        raise LayerError(f"{name}: not in the TOC")

    def chunks(self, name: str) -> list[Chunk]:
        """The chunks of a regular file, in file order (none for an empty file)."""
        first = self.entry(name)
        if first.get("type") != "reg":
            raise LayerError(f"{name}: not a regular file")
        size = int(first.get("size", 0))
        found = [e for e in self.entries if e is first or (e.get("type") == "chunk" and e.get("name") == first["name"])]
        chunks: list[Chunk] = []
        for e in found if size else []:
            start = int(e.get("chunkOffset", 0))
            length = int(e.get("chunkSize", 0)) or size - start
            chunks.append(
                Chunk(first["name"], int(e["offset"]), int(e.get("innerOffset", 0)), start, length, e["chunkDigest"])
            )
        return chunks

    def chunk_at(self, name: str, file_offset: int) -> Chunk:
        """The chunk of `name` that holds the byte at `file_offset`."""
        for chunk in self.chunks(name):
            if chunk.chunk_offset <= file_offset < chunk.chunk_offset + chunk.size:
                return chunk
        raise LayerError(f"{name}: offset {file_offset} is past the end of the file")

    def prefetch_end(self) -> int | None:
        """The blob offset where the files to fetch first end (the `.prefetch.landmark`), None when none are."""
        for entry in self.entries:
            if entry.get("name") == PREFETCH_LANDMARK:
                return int(entry["offset"])
        return None


def read_toc(blob: BinaryIO, size: int) -> Toc:
    """Find and parse the TOC of the eStargz blob `blob` (seekable, `size` bytes), reading only its tail: the
    footer (the last 51 bytes), then the TOC's member. LayerError when the blob is not eStargz."""
    if size < FOOTER_SIZE:
        raise LayerError("the blob is too short for eStargz")
    blob.seek(size - FOOTER_SIZE)
    toc_offset = parse_footer(blob.read(FOOTER_SIZE))
    if not 0 <= toc_offset < size - FOOTER_SIZE:
        raise LayerError(f"the footer names a TOC offset ({toc_offset}) outside the blob")
    blob.seek(toc_offset)
    member = blob.read(size - FOOTER_SIZE - toc_offset)
    try:
        plain = zlib.decompressobj(31).decompress(member)
        header = tarfile.TarInfo.frombuf(plain[:_BLOCK], "utf-8", "strict")
    except (zlib.error, tarfile.TarError) as exc:
        raise LayerError(f"the TOC at offset {toc_offset} is unreadable: {exc}") from None
    if header.name != TOC_NAME or len(plain) < _BLOCK + header.size:
        raise LayerError(f"no {TOC_NAME} at offset {toc_offset}")
    raw = plain[_BLOCK : _BLOCK + header.size]
    try:
        data = json.loads(raw)
        entries = data["entries"]
        if data.get("version") != 1 or not isinstance(entries, list):
            raise ValueError("not version 1 with entries")
    except (ValueError, KeyError, TypeError) as exc:
        raise LayerError(f"the TOC is not eStargz JSON: {exc}") from None
    return Toc(toc_offset, "sha256:" + hashlib.sha256(raw).hexdigest(), entries, raw)


def read_chunk(blob: BinaryIO, chunk: Chunk) -> bytes:
    """The bytes of one chunk, decompressed from its own gzip member and checked against its digest."""
    blob.seek(chunk.offset)
    z = zlib.decompressobj(31)
    want = chunk.inner_offset + chunk.size
    plain = b""
    try:
        while len(plain) < want and not z.eof:
            data = blob.read(min(_COPY, max(want - len(plain), 4096)))
            if not data:
                break
            plain += z.decompress(data, want - len(plain))
            while z.unconsumed_tail and len(plain) < want:
                plain += z.decompress(z.unconsumed_tail, want - len(plain))
    except zlib.error as exc:
        raise LayerError(f"{chunk.name}: chunk at {chunk.offset} does not decompress: {exc}") from None
    data = plain[chunk.inner_offset : want]
    if len(data) != chunk.size or "sha256:" + hashlib.sha256(data).hexdigest() != chunk.digest:
        raise LayerError(f"{chunk.name}: chunk at {chunk.offset} does not match its digest {chunk.digest}")
    return data


def iter_chunks(toc: Toc) -> Iterator[Chunk]:
    """Every chunk of every regular file the TOC lists."""
    for entry in toc.entries:
        if entry.get("type") == "reg" and entry.get("size"):
            yield from toc.chunks(str(entry["name"]))


def verify(blob: BinaryIO, size: int, toc_digest: str | None) -> Toc:
    """Check an eStargz blob: its TOC against `toc_digest` (the descriptor's annotation; None skips that check),
    and every chunk against the digest its TOC entry gives. Returns the TOC; LayerError on the first mismatch."""
    toc = read_toc(blob, size)
    if toc_digest is not None and toc.digest != toc_digest:
        raise LayerError(f"the TOC's digest is {toc.digest}, the layer's annotation says {toc_digest}")
    for chunk in iter_chunks(toc):
        read_chunk(blob, chunk)
    return toc
