"""A content-addressed blob store: `root/blobs/sha256/<hex>`, written crash-safely, read with verification.

Writing: the data goes to a fresh temporary file in `root/tmp` (same filesystem), is hashed on the way,
fsynced, then renamed to its digest name and the directory fsynced. A crash leaves at most a stray file in
`root/tmp`, which every reader ignores and `clean_tmp` removes; a blob name only ever appears with its
complete content.

Reading: `open` returns a stream that re-hashes what it hands out and raises `BlobError` at EOF when the
content does not match the digest (corruption, truncation) or the expected size. Only a stream read to its end
is verified; `verify` checks a whole blob at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from imagebuild.errors import ImagebuildError
from imagebuild.oci.digest import DigestError, validate_sha256

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")


class BlobError(ImagebuildError):
    """A bad digest, a missing blob, or content that does not match its digest."""


@dataclass(frozen=True)
class BlobInfo:
    """The digest (`sha256:<hex>`) and size in bytes of a stored blob."""

    digest: str
    size: int


def check_digest(digest: object) -> str:
    """`digest` when it is `sha256:` + 64 lowercase hex characters; otherwise BlobError."""
    try:
        return validate_sha256(digest)
    except DigestError as exc:
        raise BlobError(str(exc)) from None


class _VerifyingReader(io.RawIOBase):
    """Reads a blob, hashing as it goes; at EOF compares digest and size, raising BlobError on mismatch."""

    def __init__(self, fd: int, digest: str, expected_size: int | None) -> None:
        super().__init__()
        self._file = io.FileIO(fd, "rb", closefd=True)
        self._digest = digest
        self._expected_size = expected_size
        self._hash = hashlib.sha256()
        self._size = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        if self._checked:
            return 0
        view = memoryview(buffer).cast("B")
        if self._expected_size is not None:
            view = view[: max(0, self._expected_size - self._size) + 1]
        count = self._file.readinto(view) or 0
        self._hash.update(view[:count])
        self._size += count
        if self._expected_size is not None and self._size > self._expected_size:
            raise BlobError(f"blob {self._digest}: longer than the expected {self._expected_size} bytes")
        if count == 0:
            self._check()
        return count

    def _check(self) -> None:
        self._checked = True
        if self._expected_size is not None and self._size != self._expected_size:
            raise BlobError(f"blob {self._digest}: truncated, {self._size} of {self._expected_size} bytes")
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self._digest:
            raise BlobError(f"blob {self._digest}: content does not match (got {actual}, {self._size} bytes)")

    def close(self) -> None:
        self._file.close()
        super().close()


class BlobStore:
    """Blobs named by sha256 under `root`; see the module docstring for the crash-safety rules."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        self._blob_dir = os.path.join(self.root, "blobs", "sha256")
        self._tmp_dir = os.path.join(self.root, "tmp")
        os.makedirs(self._blob_dir, exist_ok=True)
        os.makedirs(self._tmp_dir, exist_ok=True)

    # names -------------------------------------------------------------------------------------------------

    def path(self, digest: str) -> str:
        """Where the blob `digest` lives (whether or not it exists)."""
        return os.path.join(self._blob_dir, check_digest(digest).split(":", 1)[1])

    def has(self, digest: str) -> bool:
        return os.path.isfile(self.path(digest))

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise BlobError(f"blob {digest} not found") from None

    def iter_digests(self) -> Iterator[str]:
        """The digests of all stored blobs, sorted; stray files (crash leftovers, odd names) are skipped."""
        with os.scandir(self._blob_dir) as entries:
            names = sorted(e.name for e in entries if _is_hex64(e.name) and e.is_file(follow_symlinks=False))
        for name in names:
            yield "sha256:" + name

    # writing -----------------------------------------------------------------------------------------------

    def put(
        self, stream: BinaryIO, *, expected_digest: str | None = None, expected_size: int | None = None
    ) -> BlobInfo:
        """Store everything read from `stream`; idempotent. With `expected_*`, a mismatch stores nothing."""
        if expected_digest is not None:
            check_digest(expected_digest)
        fd, tmp_path = tempfile.mkstemp(dir=self._tmp_dir, prefix="blob-", suffix=".tmp")
        try:
            info = _copy_hashing(stream, fd)
            _check_expected(info, expected_digest, expected_size)
            self._commit(tmp_path, info.digest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            raise
        finally:
            os.close(fd)
        return info

    def put_bytes(self, data: bytes, *, expected_digest: str | None = None) -> BlobInfo:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if (expected_digest is None or expected_digest == digest) and self.has(digest):
            return BlobInfo(digest, len(data))  # stored already (a rebuild's config and manifest): no write, no fsync
        return self.put(io.BytesIO(data), expected_digest=expected_digest, expected_size=None)

    def _commit(self, tmp_path: str, digest: str) -> None:
        final = self.path(digest)
        if os.path.isfile(final):
            os.unlink(tmp_path)
            return
        os.chmod(tmp_path, 0o444)
        os.rename(tmp_path, final)
        _fsync_dir(self._blob_dir)

    def delete(self, digest: str) -> bool:
        """Remove a blob; False when it was not there."""
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            return False
        _fsync_dir(self._blob_dir)
        return True

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Remove temporary files older than `older_than` seconds (left by crashes); returns how many."""
        cutoff = time.time() - older_than
        removed = 0
        with os.scandir(self._tmp_dir) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
        return removed

    # reading -----------------------------------------------------------------------------------------------

    def open(self, digest: str, *, verify: bool = True, expected_size: int | None = None) -> BinaryIO:
        """A binary stream of the blob. With `verify`, reading to EOF raises BlobError on a mismatch."""
        path = self.path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BlobError(f"blob {digest} not found") from None
        if not verify:
            return open(fd, "rb", closefd=True)
        return io.BufferedReader(_VerifyingReader(fd, digest, expected_size), CHUNK)

    def read_bytes(self, digest: str, *, expected_size: int | None = None) -> bytes:
        """The whole blob, verified."""
        with self.open(digest, expected_size=expected_size) as stream:
            return stream.read()

    def verify(self, digest: str, *, expected_size: int | None = None) -> BlobInfo:
        """Re-hash the stored blob; BlobError when it is missing or does not match."""
        with self.open(digest, expected_size=expected_size) as stream:
            size = 0
            while chunk := stream.read(CHUNK):
                size += len(chunk)
        return BlobInfo(digest, size)


def _is_hex64(name: str) -> bool:
    return len(name) == 64 and _HEX.issuperset(name)


def _copy_hashing(stream: BinaryIO, fd: int) -> BlobInfo:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
    os.fsync(fd)
    return BlobInfo("sha256:" + digest.hexdigest(), size)


def _check_expected(info: BlobInfo, expected_digest: str | None, expected_size: int | None) -> None:
    if expected_size is not None and info.size != expected_size:
        raise BlobError(f"blob {expected_digest or info.digest}: got {info.size} bytes, expected {expected_size}")
    if expected_digest is not None and info.digest != expected_digest:
        raise BlobError(f"blob content is {info.digest}, expected {expected_digest}")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
