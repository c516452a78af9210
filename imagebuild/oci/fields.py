"""Typed reading of JSON objects for the OCI models: every error names the offending field path."""

from __future__ import annotations

import json
from typing import Any

from imagebuild.errors import ImagebuildError
from imagebuild.oci.digest import DigestError, validate_digest


class OCIError(ImagebuildError, ValueError):
    """An OCI document that does not parse or does not validate; the message names the bad field."""


def canonical_json(value: object) -> bytes:
    """Deterministic JSON: sorted keys, no insignificant whitespace, UTF-8 (non-ASCII kept as is)."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise OCIError(f"not serialisable as JSON: {exc}") from exc
    return text.encode("utf-8")


def load_json(data: bytes | str, where: str) -> object:
    """Parse JSON text (bytes must be UTF-8); OCIError on malformed input."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OCIError(f"{where}: invalid JSON: {exc}") from exc


def kind(value: object) -> str:
    """A JSON-ish name for the type of `value` (for error messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class Fields:
    """The fields of one JSON object, read with type checks. `extra()` returns the keys nobody asked for."""

    def __init__(self, obj: object, where: str) -> None:
        if not isinstance(obj, dict):
            raise OCIError(f"{where}: expected object, got {kind(obj)}")
        self._obj: dict[str, Any] = obj
        self._where = where
        self._used: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self._where}.{key}"

    def raw(self, key: str) -> object:
        """The value at `key` (None when absent or null)."""
        self._used.add(key)
        return self._obj.get(key)

    def has(self, key: str) -> bool:
        return self._obj.get(key) is not None

    def extra(self) -> dict[str, Any]:
        return {k: v for k, v in self._obj.items() if k not in self._used}

    def _missing(self, key: str) -> OCIError:
        return OCIError(f"{self.path(key)}: required field is missing")

    def _wrong(self, key: str, expected: str, value: object) -> OCIError:
        return OCIError(f"{self.path(key)}: expected {expected}, got {kind(value)}")

    def opt_str(self, key: str) -> str | None:
        value = self.raw(key)
        if value is None or isinstance(value, str):
            return value
        raise self._wrong(key, "string", value)

    def req_str(self, key: str) -> str:
        value = self.opt_str(key)
        if value is None:
            raise self._missing(key)
        return value

    def opt_int(self, key: str, *, minimum: int | None = None) -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, "integer", value)
        if minimum is not None and value < minimum:
            raise OCIError(f"{self.path(key)}: must be >= {minimum}, got {value}")
        return value

    def req_int(self, key: str, *, minimum: int | None = None) -> int:
        value = self.opt_int(key, minimum=minimum)
        if value is None:
            raise self._missing(key)
        return value

    def opt_bool(self, key: str) -> bool | None:
        value = self.raw(key)
        if value is None or isinstance(value, bool):
            return value
        raise self._wrong(key, "boolean", value)

    def opt_list(self, key: str) -> list[object] | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self._wrong(key, "array", value)
        return value

    def opt_str_list(self, key: str) -> list[str] | None:
        items = self.opt_list(key)
        if items is None:
            return None
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise OCIError(f"{self.path(key)}[{i}]: expected string, got {kind(item)}")
        return [str(item) for item in items]

    def opt_str_map(self, key: str) -> dict[str, str] | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._wrong(key, "object", value)
        for name, item in value.items():
            if not isinstance(item, str):
                raise OCIError(f"{self.path(key)}.{name}: expected string, got {kind(item)}")
        return dict(value)

    def opt_key_set(self, key: str) -> list[str] | None:
        """A JSON "set" (`{"k": {}, ...}`, e.g. ExposedPorts, Volumes) as its sorted keys."""
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._wrong(key, "object", value)
        for name, item in value.items():
            if not isinstance(item, dict):
                raise OCIError(f"{self.path(key)}.{name}: expected object, got {kind(item)}")
        return sorted(value)

    def opt_digest(self, key: str) -> str | None:
        value = self.opt_str(key)
        if value is None:
            return None
        return check_digest(value, self.path(key))

    def req_digest(self, key: str) -> str:
        value = self.opt_digest(key)
        if value is None:
            raise self._missing(key)
        return value


def check_digest(value: object, where: str) -> str:
    try:
        return validate_digest(value)
    except DigestError as exc:
        raise OCIError(f"{where}: {exc}") from exc


def put(out: dict[str, Any], key: str, value: object) -> None:
    """Set `out[key]` unless value is None or an empty list/dict (the "omitempty" rule)."""
    if value is None:
        return
    if isinstance(value, list | dict | tuple) and not value:
        return
    out[key] = value
