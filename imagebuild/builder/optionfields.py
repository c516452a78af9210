"""docker buildx's comma-separated option values (`-o type=local,dest=DIR`, `--cache-to type=registry,ref=REF`)."""

from __future__ import annotations

from imagebuild.errors import BuildError


def fields(text: str, flag: str, example: str) -> dict[str, str]:
    """`KEY=VALUE,...` as a dict; a part that is not KEY=VALUE is one line naming the flag and an `example`."""
    found: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise BuildError(f"{flag} '{text}': '{part}' is not KEY=VALUE (e.g. {example})")
        found[key.strip()] = value.strip()
    return found
