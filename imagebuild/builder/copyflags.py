"""COPY and ADD's `--chmod` and `--chown`, as docker reads them. Pure: the image's files come in as text.

- `--chmod=MODE`: octal, at most 07777; it applies to every file and directory copied, not to symlinks.
- `--chown=USER[:GROUP]`: a number or a name; names are looked up in the image's /etc/passwd and /etc/group
  (`root` is 0 even without them). A numeric user without a group uses the same number as the group; a user
  name without a group uses that user's primary group from /etc/passwd (as docker's builder and buildah do).
"""

from __future__ import annotations

from imagebuild.builder.copydest import CopyError

MAX_MODE = 0o7777


def parse_chmod(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= MAX_MODE:
        raise CopyError(f"invalid chmod parameter: '{text}'. it should be octal string and between 0 and 07777")
    return mode


def uses_names(spec: str) -> bool:
    """Whether a --chown needs the image's /etc/passwd or /etc/group."""
    return any(part and not part.isdigit() for part in spec.split(":"))


def _table(text: str | None) -> dict[str, list[str]]:
    """name -> fields of a passwd- or group-style file."""
    rows: dict[str, list[str]] = {}
    for line in (text or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] and not fields[0].startswith("#"):
            rows.setdefault(fields[0], fields)
    return rows


def _number(field: str, what: str) -> int:
    if not field.isdigit():
        raise CopyError(f"{what} has no numeric id in the image")
    return int(field)


def parse_chown(spec: str, passwd: str | None, group: str | None) -> tuple[int, int]:
    """--chown=SPEC as (uid, gid), names looked up in the texts of the image's /etc/passwd and /etc/group."""
    parts = spec.split(":")
    if len(parts) > 2:
        raise CopyError(f"--chown={spec}: give USER, USER:GROUP, UID or UID:GID")
    user, group_name = parts[0], parts[1] if len(parts) == 2 else ""
    if not user or user.isdigit():
        uid = int(user or "0")
        gid = uid
    else:
        entry = _table(passwd).get(user)
        if entry is None:
            if user != "root":
                raise CopyError(f"--chown={spec}: no user '{user}' in the image's /etc/passwd: add it, or use a number")
            uid, gid = 0, 0
        else:
            uid = _number(entry[2], f"user '{user}'")
            gid = _number(entry[3], f"user '{user}'") if len(entry) > 3 else uid
    if group_name.isdigit():
        gid = int(group_name)
    elif group_name:
        row = _table(group).get(group_name)
        if row is None:
            if group_name != "root":
                raise CopyError(
                    f"--chown={spec}: no group '{group_name}' in the image's /etc/group: add it, or use a number"
                )
            gid = 0
        else:
            gid = _number(row[2], f"group '{group_name}'")
    return uid, gid
