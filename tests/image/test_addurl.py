"""ADD of URLs, served by a local HTTP server on 127.0.0.1 (never the internet): docker's name and place for the
file, mode 0600, mtime from Last-Modified, `--checksum` checked, and the content (or checksum) in the cache key."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.image.conftest import Tool, dockerfile

Mount = Callable[[str], Path]
LAST_MODIFIED = 1_600_000_000  # what the server says of its files


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: ARG002 (BaseHTTPRequestHandler's signature)
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
        self.httpd.requests = []  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[str]:
        return list(self.httpd.requests)  # type: ignore[attr-defined]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def put(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.write_bytes(data)
        os.utime(path, (LAST_MODIFIED, LAST_MODIFIED))
        return hashlib.sha256(data).hexdigest()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    s = Server(root)
    try:
        yield s
    finally:
        s.stop()


def test_add_url_names_places_and_dates_the_file_as_docker_does(
    tool: Tool, server: Server, ctx: Path, mounted_image: Mount
) -> None:
    server.put("tool.tar", b"not extracted, though it is called .tar\n")
    server.put("data.bin", b"payload\n")
    dockerfile(
        ctx,
        f"FROM busybox\nADD {server.url('tool.tar')} /opt/\nADD {server.url('data.bin')} /etc/renamed\n"
        f"ADD --chmod=644 --chown=7:8 {server.url('data.bin')} /srv/\n",
    )
    tool.build(ctx, "-t", "addurl:1")
    root = mounted_image("addurl:1")
    into = os.lstat(root / "opt" / "tool.tar")
    assert (root / "opt" / "tool.tar").read_bytes() == b"not extracted, though it is called .tar\n"
    assert (into.st_mode & 0o7777, into.st_uid, into.st_gid, int(into.st_mtime)) == (0o600, 0, 0, LAST_MODIFIED)
    assert (root / "etc" / "renamed").read_bytes() == b"payload\n"
    flagged = os.lstat(root / "srv" / "data.bin")
    assert (flagged.st_mode & 0o7777, flagged.st_uid, flagged.st_gid) == (0o644, 7, 8)


def test_checksum_right_wrong_and_the_cache_key(tool: Tool, server: Server, ctx: Path) -> None:
    digest = server.put("pinned.txt", b"pinned content\n")
    dockerfile(ctx, f"FROM busybox\nADD --checksum=sha256:{digest} {server.url('pinned.txt')} /pinned\n")
    first = tool.build(ctx)
    assert "Using cache" not in first.stdout.split("ADD", 1)[1]
    asked = len(server.requests)
    again = tool.build(ctx)  # the checksum is the key: cached without a download
    assert "Using cache" in again.stdout.split("ADD", 1)[1] and len(server.requests) == asked

    wrong = "0" * 64
    dockerfile(ctx, f"FROM busybox\n\nADD --checksum=sha256:{wrong} {server.url('pinned.txt')} /pinned\n")
    failed = tool.build(ctx, check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    line = failed.stderr.strip()
    assert len(line.splitlines()) == 1 and ":3: checksum mismatch for " in line and f"sha256:{digest}" in line, line
    dockerfile(ctx, f"FROM busybox\nADD --checksum=md5:{wrong} {server.url('pinned.txt')} /pinned\n")
    malformed = tool.build(ctx, check=False)
    assert malformed.returncode == 1 and ":2: --checksum=md5:" in malformed.stderr


def test_content_at_the_url_is_in_the_cache_key(tool: Tool, server: Server, ctx: Path) -> None:
    server.put("moving.txt", b"first\n")
    dockerfile(ctx, f"FROM busybox\nADD {server.url('moving.txt')} /moving\nRUN echo ran-after && cat /moving\n")
    tool.build(ctx)
    same = tool.build(ctx)
    assert same.stdout.count("Using cache") == 2 and "] ran-after" not in same.stdout
    server.put("moving.txt", b"second\n")
    changed = tool.build(ctx, "-t", "moved:1")
    assert "Using cache" not in changed.stdout and "] ran-after" in changed.stdout
    assert tool.run("run", "--rm", "moved:1", "cat", "/moving").stdout == "second\n"


def test_url_errors_are_one_line(tool: Tool, server: Server, ctx: Path) -> None:
    (ctx / "local.txt").write_text("x")
    for text, says in (
        (f"ADD {server.url('missing.txt')} /m\n", ":2: cannot download http://127.0.0.1:"),
        (f"ADD --checksum=sha256:{'0' * 64} local.txt /l\n", ":2: ADD --checksum is for a URL source only"),
        (f"ADD {server.url('x')} local.txt /d/\n", ":2: ADD takes either URLs or files"),
        ("ADD http://127.0.0.1:1/nothing-listens /n\n", ":2: cannot download http://127.0.0.1:1/nothing-listens"),
    ):
        dockerfile(ctx, f"FROM busybox\n{text}")
        done = tool.build(ctx, check=False)
        assert done.returncode == 1 and says in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
