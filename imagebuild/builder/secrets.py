"""`imagebuild build --secret`, in docker buildx's forms:

    --secret id=ID,src=FILE          (or source=FILE; type=file)
    --secret id=ID,env=VAR           (type=env; `type=env,src=VAR` too)
    --secret id=ID                   the variable ID if it is set, else the file ID

The bytes are read once, when the build starts, and are kept in memory only: a RUN that mounts the secret gets a
copy outside the store (see runmounts.py), and nothing of them enters a layer, a cache key or a record.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence

from imagebuild.errors import BuildError

SECRET_LIMIT = 500 << 10  # BuildKit's limit on a secret's size


def parse(values: Sequence[str], environ: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """The secrets given with --secret, by id; a bad value or an unreadable source is a BuildError."""
    env = os.environ if environ is None else environ
    secrets: dict[str, bytes] = {}
    for value in values:
        ident, data = _one(value, env)
        secrets[ident] = data
    return secrets


def _one(value: str, env: Mapping[str, str]) -> tuple[str, bytes]:
    fields: dict[str, str] = {}
    for item in next(csv.reader([value]), []):
        key, has_value, given = item.partition("=")
        key = key.strip().lower()
        if not has_value or key not in ("id", "type", "src", "source", "env"):
            raise BuildError(f"--secret {value!r}: unknown field {item!r} (use id=ID,src=FILE or id=ID,env=VAR)")
        fields["src" if key == "source" else key] = given
    ident = fields.get("id", "")
    if not ident:
        raise BuildError(f"--secret {value!r}: no id (use id=ID,src=FILE or id=ID,env=VAR)")
    kind = fields.get("type", "")
    if kind not in ("", "file", "env"):
        raise BuildError(f"--secret {value!r}: type is file or env, not {kind!r}")
    variable, path = fields.get("env"), fields.get("src")
    if kind == "env" and variable is None:
        variable, path = path or ident, None
    if variable is None and path is None:
        if ident in env:
            variable = ident
        else:
            path = ident
    if variable is not None:
        if variable not in env:
            raise BuildError(f"--secret id={ident}: the environment variable {variable} is not set")
        data = env[variable].encode("utf-8", "surrogateescape")
    else:
        assert path is not None
        try:
            with open(os.path.expanduser(path), "rb") as f:
                data = f.read(SECRET_LIMIT + 1)
        except OSError as exc:
            raise BuildError(f"--secret id={ident}: cannot read {path}: {exc.strerror}") from None
    if len(data) > SECRET_LIMIT:
        raise BuildError(f"--secret id={ident}: larger than {SECRET_LIMIT >> 10} KiB, the limit BuildKit sets too")
    return ident, data
