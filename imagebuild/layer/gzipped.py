"""Deterministic gzip on every core: one gzip stream, its deflate data made block by block in parallel.

The input is cut into fixed blocks of BLOCK bytes. Each block is deflated on its own (raw deflate, the previous
block's last 32 KiB as its preset dictionary, so matches reach back across the cut as a single stream's would)
and ends with a sync flush, the last with the final block; the pieces joined are one valid deflate stream, and
the gzip header and trailer (CRC-32 and length of the whole input) wrap it as pigz does. zlib releases the GIL
while it deflates, so threads run the blocks on all cores.

The bytes depend only on the input, the level and BLOCK, never on how many threads ran or in what order they
finished: the same layer always gives the same blob and digest. The header is Python's `gzip` module's for the
same level (no name, mtime 0, OS 255), so any gzip reader takes it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import io
import os
import struct
import zlib
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

GZIP_LEVEL = 6
BLOCK = 1 << 20  # input bytes per independently deflated block: part of the output's definition, never tuned per run
WINDOW = 32 * 1024  # deflate's window: how much of the previous block a block may refer back to
_READ = 4 * BLOCK


def threads() -> int:
    """How many blocks to deflate at once: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _header(level: int) -> bytes:
    extra_flags = 2 if level == 9 else 4 if level == 1 else 0  # as Python's gzip module (and gzip(1)) set XFL
    return b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + bytes([extra_flags, 255])


def _deflate(block: bytes, previous: bytes, level: int, last: bool) -> bytes:
    if previous:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=previous)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(block) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class GzipWriter(io.RawIOBase):
    """A write-only stream gzipping what it is given into `sink` (deterministic, see the module); `close` (or
    leaving the `with`) writes the end. `digest` and `size` are those of the compressed bytes."""

    def __init__(self, sink: BinaryIO, *, level: int = GZIP_LEVEL, workers: int | None = None) -> None:
        super().__init__()
        self._sink = sink
        self._level = level
        self._workers = workers or threads()
        self._pool = concurrent.futures.ThreadPoolExecutor(self._workers, thread_name_prefix="gzip")
        self._pending: collections.deque[concurrent.futures.Future[bytes]] = collections.deque()
        self._buffer = bytearray()
        self._held: bytes | None = None  # a full block not yet sent: only the next write tells whether it is last
        self._previous = b""
        self._crc = 0
        self._length = 0
        self._hash = hashlib.sha256()
        self.size = 0
        self._out(_header(level))

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data).cast("B")
        self._crc = zlib.crc32(view, self._crc)
        self._length += len(view)
        self._buffer += view
        while len(self._buffer) >= BLOCK:
            block = bytes(self._buffer[:BLOCK])
            del self._buffer[:BLOCK]
            self._hold(block)
        return len(view)

    def _hold(self, block: bytes) -> None:
        if self._held is not None:
            self._submit(self._held, last=False)
        self._held = block

    def _submit(self, block: bytes, last: bool) -> None:
        self._pending.append(self._pool.submit(_deflate, block, self._previous, self._level, last))
        self._previous = block[-WINDOW:]
        while self._pending and (len(self._pending) > 2 * self._workers or self._pending[0].done()):
            self._out(self._pending.popleft().result())

    def _out(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)
        self._sink.write(data)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._buffer or self._held is None:  # the rest is the last block (an empty input: an empty one)
                if self._held is not None:
                    self._submit(self._held, last=False)
                self._held = bytes(self._buffer)
                self._buffer.clear()
            self._submit(self._held, last=True)
            while self._pending:
                self._out(self._pending.popleft().result())
            self._out(struct.pack("<II", self._crc, self._length & 0xFFFFFFFF))
        finally:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)
            super().close()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def compress_gzip(src: BinaryIO, dst: BinaryIO, *, level: int = GZIP_LEVEL) -> tuple[str, int]:
    """Gzip `src` into `dst` deterministically (see the module): the sha256 digest and size of the compressed
    bytes (the layer's descriptor values)."""
    gz = GzipWriter(dst, level=level)
    with gz:
        while chunk := src.read(_READ):
            gz.write(chunk)
    return gz.digest, gz.size
