"""A client for the OCI distribution API: push and pull images, standard library only.

Blobs the registry has are not sent again (HEAD first, or a cross-repository mount); blobs go up in one PUT, or
in chunks when large. Manifests are negotiated with Accept headers for OCI and Docker types; an index (manifest
list) is resolved to linux on this machine's architecture. Everything pulled is checked against its digest
and staged before the store changes. Auth: anonymous, Basic, and the Bearer token challenge, with credentials
from ~/.docker/config.json (written by `imagebuild login`). 5xx answers and dropped connections are retried
with backoff.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import io
import json
import os
import platform
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from imagebuild.errors import BuildError
from imagebuild.lazy.complete import assemble
from imagebuild.oci import Descriptor, Index, Manifest, OCIError, mediatypes
from imagebuild.store.estargz import converted
from imagebuild.store.images import Image, Store
from imagebuild.transport.common import Say, Stager, quiet

CHUNK = int(os.environ.get("IMAGEBUILD_UPLOAD_CHUNK", 16 * 1024 * 1024))  # larger blobs go up in chunks
RETRIES = 4
ACCEPT = ", ".join(
    [mediatypes.OCI_MANIFEST, mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST, mediatypes.DOCKER_MANIFEST_LIST]
)


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> Reference:
        rest, _, digest_text = text.partition("@")
        digest = digest_text or None
        first, _, remainder = rest.partition("/")
        if not remainder or not ("." in first or ":" in first or first == "localhost"):
            raise BuildError(f"'{text}' names no registry: use HOST[:PORT]/NAME[:TAG], e.g. 127.0.0.1:5000/app:1.0")
        name, _, tag = remainder.rpartition(":") if ":" in remainder.rsplit("/", 1)[-1] else (remainder, "", "")
        if not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*", name):
            raise BuildError(f"'{name}' is not a valid repository name (lowercase letters, digits, . _ - /)")
        return cls(first, name, tag or (None if digest else "latest"), digest)

    @property
    def target(self) -> str:
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag}")


def docker_config_path() -> str:
    return os.path.join(
        os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker"), "config.json"
    )


def load_credentials(registry: str) -> tuple[str, str] | None:
    try:
        with open(docker_config_path(), encoding="utf-8") as f:
            auths = json.load(f).get("auths", {})
    except (OSError, ValueError):
        return None
    for key in (registry, f"https://{registry}", f"http://{registry}"):
        entry = auths.get(key)
        if entry and entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return user, password
    return None


def save_credentials(registry: str, user: str, password: str) -> str:
    path = docker_config_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        config = {}
    config.setdefault("auths", {})[registry] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    os.replace(tmp, path)
    return path


class Client:
    def __init__(
        self,
        registry: str,
        *,
        insecure: bool = False,
        credentials: tuple[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.registry = registry
        self.base = f"{'http' if insecure else 'https'}://{registry}"
        self.credentials = credentials if credentials is not None else load_credentials(registry)
        self.authorization: str | None = None
        self.progress = progress  # told each blob's progress, one line at a time; None: quiet
        self.sent: list[str] = []  # digests of the blobs this client uploaded (for reports and tests)

    # -- HTTP with auth and retries ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        scope: str = "",
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, dict[str, str], bytes]:
        if url.startswith("/"):
            url = self.base + url
        for attempt in range(RETRIES):
            request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
            if self.authorization:
                request.add_header("Authorization", self.authorization)
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
            except urllib.error.HTTPError as exc:
                status, answer = exc.code, {k.lower(): v for k, v in exc.headers.items()}
                payload = exc.read()
                if status in ok:
                    return status, answer, payload
                if status == 401 and self._authenticate(answer.get("www-authenticate", ""), scope):
                    continue
                if status >= 500 and attempt < RETRIES - 1:
                    time.sleep(0.5 * 2**attempt)
                    continue
                raise BuildError(f"{method} {url}: {status} {_message(payload)}") from None
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
                if attempt < RETRIES - 1:
                    time.sleep(0.5 * 2**attempt)
                    continue
                reason = getattr(exc, "reason", exc)
                raise BuildError(
                    f"cannot reach the registry {self.registry}: {reason} (plain http? use --insecure)"
                ) from None
        raise BuildError(f"{method} {url}: still failing after {RETRIES} tries")

    def _authenticate(self, challenge: str, scope: str) -> bool:
        """Answer a 401: Basic with our credentials, or fetch a Bearer token from the realm it names."""
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if self.credentials is None:
                raise BuildError(f"{self.registry} needs a login: run 'imagebuild login {self.registry}'")
            if (self.authorization or "").startswith("Basic"):
                raise BuildError(
                    f"{self.registry} refused the credentials of '{self.credentials[0]}': check them "
                    f"with 'imagebuild login {self.registry}'"
                )
            user, password = self.credentials
            self.authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            return True
        if scheme.lower() == "bearer":
            fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
            query = {"service": fields.get("service", "")}
            if scope or fields.get("scope"):
                query["scope"] = fields.get("scope") or scope
            request = urllib.request.Request(fields["realm"] + "?" + urllib.parse.urlencode(query))
            if self.credentials is not None:
                user, password = self.credentials
                request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    token = json.loads(response.read())
            except (urllib.error.URLError, ValueError) as exc:
                raise BuildError(
                    f"{self.registry}: the token service refused us ({exc}): check 'imagebuild login'"
                ) from None
            new = "Bearer " + (token.get("token") or token.get("access_token") or "")
            if new == self.authorization:
                return False
            self.authorization = new
            return True
        return False

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    # -- blobs and manifests ----------------------------------------------------------------------------------

    def has_blob(self, repo: str, digest: str) -> bool:
        status, _, _ = self.request(
            "HEAD", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull", ok=(200, 404)
        )
        return status == 200

    def push_blob(self, repo: str, digest: str, size: int, open_blob: BinaryIO, mount_from: str | None = None) -> None:
        scope = f"repository:{repo}:pull,push"
        if self.has_blob(repo, digest):
            self._say(f"  {digest[7:19]}: already there")
            return
        query = f"?mount={digest}&from={mount_from}" if mount_from else ""
        status, headers, _ = self.request("POST", f"/v2/{repo}/blobs/uploads/{query}", b"", scope=scope, ok=(201, 202))
        if status == 201:
            self._say(f"  {digest[7:19]}: mounted from {mount_from}")
            return
        location = urllib.parse.urljoin(self.base + "/", headers["location"])
        with open_blob as f:
            if size <= CHUNK:
                data = f.read()
                self._put_final(location, digest, data, scope)
            else:
                offset = 0
                while chunk := f.read(CHUNK):
                    headers_ = {
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                    }
                    _, answer, _ = self.request("PATCH", location, chunk, headers_, scope, ok=(202,))
                    location = urllib.parse.urljoin(self.base + "/", answer["location"])
                    offset += len(chunk)
                    self._say(f"  {digest[7:19]}: {offset}/{size} bytes")
                self._put_final(location, digest, b"", scope)
        self.sent.append(digest)
        self._say(f"  {digest[7:19]}: pushed {size} bytes")

    def _put_final(self, location: str, digest: str, data: bytes, scope: str) -> None:
        separator = "&" if "?" in location else "?"
        self.request(
            "PUT",
            f"{location}{separator}digest={urllib.parse.quote(digest)}",
            data,
            {"Content-Type": "application/octet-stream"},
            scope,
            ok=(201, 204),
        )

    def get_blob(self, repo: str, descriptor: Descriptor) -> bytes:
        _, _, data = self.request("GET", f"/v2/{repo}/blobs/{descriptor.digest}", scope=f"repository:{repo}:pull")
        if "sha256:" + hashlib.sha256(data).hexdigest() != descriptor.digest or len(data) != descriptor.size:
            raise BuildError(f"{self.registry}/{repo}: blob {descriptor.digest} does not match its digest")
        return data

    def get_range(self, repo: str, digest: str, start: int, length: int) -> bytes:
        """`length` bytes of blob `digest` from `start` (an HTTP Range request; retried as every request is). The
        caller verifies them (a TOC against its digest, a chunk against its own)."""
        if length <= 0:
            return b""
        status, _, data = self.request(
            "GET",
            f"/v2/{repo}/blobs/{digest}",
            headers={"Range": f"bytes={start}-{start + length - 1}"},
            scope=f"repository:{repo}:pull",
            ok=(200, 206),
        )
        if status == 200:  # a server that ignores Range sends the whole blob
            data = data[start : start + length]
        if len(data) != length:
            raise BuildError(
                f"{self.registry}/{repo}: blob {digest}: asked for {length} bytes at {start}, got {len(data)}"
            )
        return data

    def get_manifest(self, repo: str, reference: str) -> tuple[str, bytes, str]:
        _, headers, data = self.request(
            "GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT}, scope=f"repository:{repo}:pull"
        )
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise BuildError(f"{self.registry}/{repo}: manifest {reference} does not match its digest")
        media_type = headers.get("content-type", "").split(";")[0] or json.loads(data).get("mediaType", "")
        return media_type, data, digest

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> None:
        self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            data,
            {"Content-Type": media_type},
            f"repository:{repo}:pull,push",
            ok=(201,),
        )


def _message(payload: bytes) -> str:
    try:
        errors = json.loads(payload).get("errors", [])
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or payload[:200].decode()
    except (ValueError, AttributeError):
        return payload[:200].decode(errors="replace")


def push(store: Store, image: Image, ref: Reference, client: Client, mount_from: str | None = None) -> str:
    """Push `image` as `ref`; returns the manifest digest."""
    for layer in image.layers:
        client.push_blob(
            ref.repository, layer.blob.digest, layer.blob.size, store.blobs.open(layer.blob.digest), mount_from
        )
    config = image.manifest.config
    client.push_blob(ref.repository, config.digest, config.size, store.blobs.open(config.digest), mount_from)
    manifest_digest = store.manifest_digest(image.id)
    data = store.blobs.read_bytes(manifest_digest)
    client.put_manifest(ref.repository, ref.target, data, image.manifest.media_type or mediatypes.OCI_MANIFEST)
    return manifest_digest


def push_estargz(store: Store, image: Image, ref: Reference, client: Client, mount_from: str | None = None) -> str:
    """Push `image` in eStargz form as `ref` (converted on the way, nothing stored); returns the manifest digest.
    An image that is eStargz already goes up as it is stored."""
    with converted(store, image) as result:
        if not result.changed:
            return push(store, image, ref, client, mount_from)
        for blob in [*result.manifest.layers, result.manifest.config]:
            client.push_blob(ref.repository, blob.digest, blob.size, result.open_blob(store, blob.digest), mount_from)
        media_type = result.manifest.media_type or mediatypes.OCI_MANIFEST
        client.put_manifest(ref.repository, ref.target, result.manifest_bytes, media_type)
        return "sha256:" + hashlib.sha256(result.manifest_bytes).hexdigest()


def _platform_manifest(index: Index, source: str) -> Descriptor:
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    for descriptor in index.manifests:
        if descriptor.platform and descriptor.platform.os == "linux" and descriptor.platform.architecture == machine:
            return descriptor
    raise BuildError(f"{source} has no image for linux/{machine}")


def image_manifest(
    client: Client, ref: Reference, fail: Callable[[str], BuildError]
) -> tuple[bytes, Manifest, bytes | None]:
    """The manifest of `ref` for this machine's platform (through its index, when it has one): its bytes, the
    manifest, and the index's bytes or None. `fail` makes the error for a bad answer."""
    media_type, data, _ = client.get_manifest(ref.repository, ref.target)
    index_bytes = None
    try:
        if media_type in mediatypes.INDEX_TYPES:
            index_bytes = data
            chosen = _platform_manifest(Index.from_json(data), str(ref))
            media_type, data, digest = client.get_manifest(ref.repository, chosen.digest)
            if digest != chosen.digest:
                raise fail(f"manifest {chosen.digest} does not match its digest")
        if media_type not in mediatypes.MANIFEST_TYPES:
            raise fail(f"unknown manifest media type '{media_type}'")
        return data, Manifest.from_json(data), index_bytes
    except OCIError as exc:
        raise fail(f"malformed manifest: {exc}") from None


def pull(store: Store, ref: Reference, client: Client, tags: list[str], say: Say = quiet) -> str:
    """Pull `ref`: its manifest, config and index blobs are stored as received (the image id is the sender's
    config digest); a layer the store holds is not downloaded again (see `Stager`)."""
    stager = Stager(store, str(ref), say)
    try:
        data, manifest, index_bytes = image_manifest(client, ref, stager.fail)
        if store.blobs.has(manifest.config.digest):
            config_bytes = store.blobs.read_bytes(manifest.config.digest, expected_size=manifest.config.size)
        else:
            config_bytes = client.get_blob(ref.repository, manifest.config)
        diff_ids = json.loads(config_bytes).get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(manifest.layers):
            raise stager.fail("the manifest and the config disagree on the number of layers")
        lazy_cache = os.path.join(store.root, "lazy", "files")  # what a lazy mount of the image fetched
        for layer, diff_id in zip(manifest.layers, diff_ids, strict=True):
            download = functools.partial(_download, client, ref.repository, layer, lazy_cache)
            stager.stage(layer.digest, download, diff_id, layer)
        default = [f"{ref.registry}/{ref.repository}:{ref.tag}"] if ref.tag else []
        return stager.commit(config_bytes, tags or default, data, index_bytes)
    finally:
        stager.discard()


def _download(client: Client, repo: str, layer: Descriptor, lazy_cache: str | None = None) -> BinaryIO:
    """A layer blob: from the registry, or assembled from what `lazy_cache` holds of it and the rest."""
    assembled = assemble(client, repo, layer, lazy_cache) if lazy_cache else None
    if assembled is not None:
        client._say(f"  {layer.digest[7:19]}: {assembled[1]} of {layer.size} bytes from the lazy cache")
        return io.BytesIO(assembled[0])
    client._say(f"  {layer.digest[7:19]}: pulling {layer.size} bytes")
    return io.BytesIO(client.get_blob(repo, layer))
