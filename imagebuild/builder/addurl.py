"""ADD of URLs: `ADD [--checksum=sha256:HEX] URL... DEST`, by BuildKit's rules. The only module that downloads.

- The file's name is the last component of the URL's path (`__unnamed__` when it has none, as BuildKit's
  Dockerfile frontend names it); DEST ending in `/` (or an existing directory) receives it under that name,
  any other DEST is the file itself.
- It is mode 0600 (or `--chmod`'s), root's (or `--chown`'s), with the server's Last-Modified as its mtime
  (the epoch when there is none). A downloaded archive is never extracted.
- The cache key: with `--checksum`, the checksum and the name (nothing is downloaded when the step is cached);
  without, the content's sha256, the name and Last-Modified, so a changed file at the same URL builds again.
- A download whose content does not match `--checksum` is an error naming the Dockerfile line.

Plain http and https through urllib, redirects followed, the environment's proxy settings honoured.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import posixpath
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from imagebuild.builder.copydest import CopyError, Source, directories, place, target
from imagebuild.builder.copyflags import parse_chmod
from imagebuild.builder.copylayer import LayerWriter, Meta
from imagebuild.builder.copystep import CopyRequest, owner_of
from imagebuild.builder.rootview import FileTree
from imagebuild.errors import BuildError

SCHEMES = ("http://", "https://")
UNNAMED = "__unnamed__"
DEFAULT_MODE = 0o600
ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
TIMEOUT = 60
CHUNK = 1 << 20


def is_url(source: str) -> bool:
    return source.lower().startswith(SCHEMES)


def file_name(url: str) -> str:
    """The name BuildKit's Dockerfile frontend gives a downloaded file: the URL path's last component."""
    name = urllib.parse.unquote(posixpath.basename(urllib.parse.urlsplit(url).path))
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        return UNNAMED
    return name


def parse_checksum(text: str) -> tuple[str, str]:
    """`ALGO:HEX` (sha256, sha384 or sha512, as BuildKit takes) -> (algo, hex)."""
    algo, _, hexdigest = text.partition(":")
    hexdigest = hexdigest.lower()
    if (
        algo not in ALGORITHMS
        or len(hexdigest) != ALGORITHMS[algo]
        or not all(c in "0123456789abcdef" for c in hexdigest)
    ):
        raise CopyError(f"--checksum={text} is not a digest: use sha256:<64 hex digits> (or sha384:, sha512:)")
    return algo, hexdigest


def for_step(
    cmd: str, sources: list[str], flags: dict[str, str], scratch: Callable[[str], str], where: str
) -> Downloads | None:
    """The downloads of an ADD of URLs; None for any other COPY or ADD. A BuildError names the line `where`."""
    if cmd != "ADD" or not any(is_url(s) for s in sources):
        if "checksum" in flags:
            raise BuildError(f"{where}: ADD --checksum is for a URL source only")
        return None
    if not all(is_url(s) for s in sources):
        raise BuildError(f"{where}: ADD takes either URLs or files of the context, not both: use two ADD steps")
    try:
        return Downloads(sources, flags.get("checksum"), scratch, where)
    except CopyError as exc:
        raise BuildError(f"{where}: {exc}") from None


class Downloads:
    """The URLs of one ADD: fetched into a scratch directory when the cache key or the layer needs them."""

    def __init__(self, urls: list[str], checksum: str | None, scratch: Callable[[str], str], where: str) -> None:
        if checksum is not None and len(urls) != 1:
            raise CopyError("--checksum needs exactly one source URL")
        self.where = where
        self.urls = urls
        self.pinned = parse_checksum(checksum) if checksum is not None else None
        self.names = [file_name(url) for url in urls]
        self._scratch = scratch
        self.directory: str | None = None
        self.fetched: list[tuple[str, str, int]] = []  # (path on disk, sha256, mtime) per URL

    def key(self) -> tuple[dict[str, str], str]:
        """Per-source digests (for --explain-cache) and the content part of the step's cache key."""
        if self.pinned is not None:
            algo, hexdigest = self.pinned
            digest = f"{algo}:{hexdigest}"
            return {self.urls[0]: digest}, repr(("checksum", digest, self.names[0]))
        try:
            self.fetch()
        except CopyError as exc:
            self.close()
            raise BuildError(f"{self.where}: {exc}") from None
        files = {url: f"sha256:{sha}" for url, (_, sha, _) in zip(self.urls, self.fetched, strict=True)}
        parts = [(name, sha, mtime) for name, (_, sha, mtime) in zip(self.names, self.fetched, strict=True)]
        return files, repr(("content", parts))

    def fetch(self) -> None:
        if self.directory is not None:
            return
        self.directory = self._scratch("add-url-")
        for i, url in enumerate(self.urls):
            self.fetched.append(self._download(url, os.path.join(self.directory, str(i))))

    def _download(self, url: str, path: str) -> tuple[str, str, int]:
        hasher = hashlib.new(self.pinned[0]) if self.pinned is not None else hashlib.sha256()
        sha = hashlib.sha256()
        request = urllib.request.Request(url, headers={"User-Agent": "imagebuild"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response, open(path, "wb") as out:
                while chunk := response.read(CHUNK):
                    hasher.update(chunk)
                    sha.update(chunk)
                    out.write(chunk)
                modified = response.headers.get("Last-Modified")
        except urllib.error.HTTPError as exc:
            raise CopyError(f"cannot download {url}: {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise CopyError(f"cannot download {url}: {reason}") from None
        if self.pinned is not None and hasher.hexdigest() != self.pinned[1]:
            raise CopyError(
                f"checksum mismatch for {url}: its content is {self.pinned[0]}:{hasher.hexdigest()}, "
                f"--checksum says {self.pinned[0]}:{self.pinned[1]}"
            )
        return path, sha.hexdigest(), _mtime(modified)

    def write(self, request: CopyRequest, image: FileTree, layer: str) -> None:
        """The step's layer: each download at its place in the empty directory `layer`; the downloads go after."""
        try:
            self._write(request, image, layer)
        finally:
            self.close()

    def _write(self, request: CopyRequest, image: FileTree, layer: str) -> None:
        self.fetch()
        mode = parse_chmod(request.chmod) if request.chmod is not None else DEFAULT_MODE
        owner = owner_of(request.chown, image) or (0, 0)
        sources = [Source(name) for name in self.names]
        destination = place(request.dest, request.workdir, sources, image, "ADD")
        writer = LayerWriter(layer)
        writer.prepare(directories(destination, image), owner)
        for source, (path, _, mtime) in zip(sources, self.fetched, strict=True):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                writer.file(target(destination, source), fd, Meta(mode, *owner, mtime * 1_000_000_000))
            finally:
                os.close(fd)
        writer.finish()

    def close(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None
        self.fetched = []


def _mtime(header: str | None) -> int:
    """Last-Modified as seconds since the epoch; 0 (BuildKit's choice) when the server sends none."""
    if not header:
        return 0
    try:
        return int(email.utils.parsedate_to_datetime(header).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0
