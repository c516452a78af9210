"""`RUN --mount=...` values, read as BuildKit's Dockerfile frontend reads them (pure: no filesystem here).

    --mount=type=cache,target=DIR[,id=ID][,sharing=shared|private|locked][,mode=,uid=,gid=][,from=,source=][,ro]
    --mount=type=secret,id=ID[,target=PATH][,env=VAR][,required=true][,mode=,uid=,gid=]
    --mount=[type=bind,][from=STAGE|IMAGE,][source=PATH,]target=PATH[,rw]
    --mount=type=tmpfs,target=PATH[,size=BYTES]

The value is comma-separated `key=value` fields (a field may be quoted as in CSV: `"target=/a,b"`); `ro`, `rw`,
`readonly`, `readwrite` and `required` may stand alone for true. `type` defaults to bind, as in BuildKit.
"""

from __future__ import annotations

import csv
import dataclasses
import posixpath
import re
from dataclasses import dataclass

from imagebuild.errors import ImagebuildError

TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING = ("shared", "private", "locked")
SECRETS_DIR = "/run/secrets"
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
_KEYS = {
    "type": "type",
    "from": "from",
    "source": "source",
    "src": "source",
    "target": "target",
    "dst": "target",
    "destination": "target",
    "readonly": "readonly",
    "ro": "readonly",
    "readwrite": "readwrite",
    "rw": "readwrite",
    "id": "id",
    "sharing": "sharing",
    "mode": "mode",
    "uid": "uid",
    "gid": "gid",
    "required": "required",
    "env": "env",
    "size": "size",
}
_SIZE = re.compile(r"(?i)^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)$")


class MountError(ImagebuildError):
    """A --mount value that cannot be used; the message says which field and what is allowed."""


@dataclass(frozen=True)
class Mount:
    """One --mount, with BuildKit's defaults filled in. `target` is absolute and clean (None: a secret only
    given as an environment variable). `source` is relative to `from` (or the context), without a leading /."""

    type: str
    target: str | None
    source: str = ""
    from_: str | None = None
    readonly: bool = False
    id: str = ""
    sharing: str = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False
    env: str | None = None
    size: int | None = None

    def key(self) -> str:
        """What the RUN's cache key takes from this mount: its form, never a cache's or a secret's content."""
        fields = (self.type, self.target, self.source, self.from_, self.readonly, self.id, self.sharing)
        return repr((*fields, self.mode, self.uid, self.gid, self.required, self.env, self.size))


def parse_mount(value: str) -> Mount:
    """One --mount value, checked; raises MountError."""
    try:
        fields = next(csv.reader([value]))
    except (csv.Error, StopIteration):
        raise MountError(f"cannot read the --mount value {value!r}: give comma-separated key=value fields") from None
    given: dict[str, str] = {}
    for field_ in fields:
        raw_key, has_value, raw = field_.partition("=")
        key = _KEYS.get(raw_key.strip().lower())
        if key is None:
            known = ", ".join(sorted(set(_KEYS.values())))
            raise MountError(f"unknown --mount field {raw_key.strip()!r} (fields: {known})")
        if not has_value:
            if key not in ("readonly", "readwrite", "required"):
                raise MountError(f"--mount field '{key}' needs a value ({key}=...)")
            raw = "true"
        given[key] = raw.strip()
    kind = given.get("type", "bind").lower()
    if kind not in TYPES:
        raise MountError(f"unknown --mount type {kind!r} (types: {', '.join(t for t in TYPES if t != 'ssh')})")
    if kind == "ssh":
        raise MountError("--mount=type=ssh is not supported by this builder: use type=secret for a key")
    return _build(kind, given)


def _build(kind: str, given: dict[str, str]) -> Mount:
    allowed = {
        "bind": {"type", "from", "source", "target", "readonly", "readwrite"},
        "cache": {"type", "from", "source", "target", "readonly", "readwrite", "id", "sharing", "mode", "uid", "gid"},
        "tmpfs": {"type", "target", "size"},
        "secret": {"type", "id", "target", "env", "required", "mode", "uid", "gid"},
    }[kind]
    extra = sorted(set(given) - allowed)
    if extra:
        raise MountError(f"--mount=type={kind} takes no '{extra[0]}' (fields: {', '.join(sorted(allowed))})")
    target = _target(given["target"]) if given.get("target") else None
    readonly = kind == "bind"
    if "readonly" in given:
        readonly = _bool("readonly", given["readonly"])
    if "readwrite" in given:
        readonly = not _bool("readwrite", given["readwrite"])
    sharing = given.get("sharing", "shared").lower()
    if sharing not in SHARING:
        raise MountError(f"unknown --mount sharing {sharing!r} (sharing: {', '.join(SHARING)})")
    mount = Mount(
        type=kind,
        target=target,
        source=posixpath.normpath("/" + given.get("source", "").lstrip("/")).lstrip("/"),
        from_=given.get("from") or None,
        readonly=readonly,
        sharing=sharing,
        mode=_number("mode", given["mode"], 8) if "mode" in given else None,
        uid=_number("uid", given["uid"], 10) if "uid" in given else None,
        gid=_number("gid", given["gid"], 10) if "gid" in given else None,
        required=_bool("required", given["required"]) if "required" in given else False,
        env=given.get("env") or None,
        size=_size(given["size"]) if "size" in given else None,
    )
    if kind == "secret":
        return _secret(mount, given)
    if target is None:
        raise MountError(f"--mount=type={kind} needs a target (target=/path in the container)")
    if kind == "cache":
        mode = 0o755 if mount.mode is None else mount.mode
        return dataclasses.replace(mount, id=given.get("id") or target, mode=mode)
    return mount


def _secret(mount: Mount, given: dict[str, str]) -> Mount:
    ident = given.get("id") or (posixpath.basename(mount.target) if mount.target else "")
    if not ident:
        raise MountError("--mount=type=secret needs an id (id=NAME, as given to --secret id=NAME,...)")
    target = mount.target
    if target is None and mount.env is None:
        target = f"{SECRETS_DIR}/{ident}"
    if mount.env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", mount.env):
        raise MountError(f"--mount=type=secret: env={mount.env!r} is not a variable name")
    return dataclasses.replace(mount, id=ident, target=target, mode=0o400 if mount.mode is None else mount.mode)


def _target(raw: str) -> str:
    path = posixpath.normpath("/" + raw.lstrip("/"))
    if path == "/":
        raise MountError("--mount target=/ would hide the whole image: mount on a directory in it")
    return path


def _bool(key: str, raw: str) -> bool:
    value = _BOOLS.get(raw.lower())
    if value is None:
        raise MountError(f"--mount field '{key}' is true or false, not {raw!r}")
    return value


def _number(key: str, raw: str, base: int) -> int:
    try:
        value = int(raw, base)
    except ValueError:
        what = "an octal mode such as 0755" if base == 8 else "a number"
        raise MountError(f"--mount field '{key}' must be {what}, not {raw!r}") from None
    if value < 0 or (base == 8 and value > 0o7777):
        raise MountError(f"--mount field '{key}' is out of range: {raw!r}")
    return value


def _size(raw: str) -> int:
    """A size as docker reads one for tmpfs (64m, 1g, 512k, 1048576; binary units)."""
    match = _SIZE.match(raw.strip())
    if match is None:
        raise MountError(f"--mount size={raw!r} is not a size (such as 64m, 1g or a number of bytes)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))
