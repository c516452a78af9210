"""Content digests (OCI image-spec "descriptor.md#digests"): parsing, validation, computing.

Everything that leaves the machine is named by sha256 (ARCHITECTURE section 4). Other registered algorithms
(sha512) are accepted when *reading* descriptors written by others, never produced here.
"""

from __future__ import annotations

import hashlib
import re

from imagebuild.errors import ImagebuildError

SHA256 = "sha256"

_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_HEX_LENGTH: dict[str, int] = {"sha256": 64, "sha512": 128}
_LOWER_HEX = re.compile(r"^[0-9a-f]+$")


class DigestError(ImagebuildError, ValueError):
    """A string that is not a valid digest (the message says why)."""


def validate_digest(digest: object) -> str:
    """Return `digest` when it is a well-formed digest of a registered algorithm, else raise DigestError."""
    if not isinstance(digest, str):
        raise DigestError(f"digest must be a string, got {type(digest).__name__}")
    if not _GRAMMAR.match(digest):
        raise DigestError(f"malformed digest {digest!r} (expected 'algorithm:hex')")
    algorithm, encoded = digest.split(":", 1)
    length = _HEX_LENGTH.get(algorithm)
    if length is None:
        raise DigestError(f"unsupported digest algorithm {algorithm!r} in {digest!r}")
    if len(encoded) != length or not _LOWER_HEX.match(encoded):
        raise DigestError(f"digest {digest!r}: {algorithm} needs {length} lowercase hex characters")
    return digest


def validate_sha256(digest: object) -> str:
    """Return `digest` when it is `sha256:` + 64 lowercase hex characters, else raise DigestError."""
    checked = validate_digest(digest)
    if not checked.startswith(SHA256 + ":"):
        raise DigestError(f"digest {checked!r}: only sha256 is supported here")
    return checked


def sha256_digest(data: bytes | bytearray) -> str:
    """The `sha256:<hex>` digest of `data`."""
    return f"{SHA256}:{hashlib.sha256(data).hexdigest()}"


def digest_hex(digest: str) -> str:
    """The encoded (hex) part of a validated digest."""
    return validate_digest(digest).split(":", 1)[1]
