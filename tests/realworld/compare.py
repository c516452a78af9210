"""Two rootfs compared entry by entry, what may legitimately differ, and a readable report of the rest."""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from dataclasses import dataclass
from functools import cache

from tests.realworld.walk import Entry

# What an entry can differ in. `missing`/`extra`: the path is only in the reference / only in the candidate.
# `config`: a field of the image's config (the path is the field's name).
KINDS = ("config", "missing", "extra", "type", "owner", "mode", "content", "target", "device", "xattr", "hardlink")
# The config fields a Dockerfile sets; created dates, history and the builder's own label are no build's result.
CONFIG_FIELDS = ("User", "Env", "Entrypoint", "Cmd", "WorkingDir", "ExposedPorts", "Volumes", "StopSignal", "Labels")
BUILDER_LABELS = ("io.buildah.version",)


@dataclass(frozen=True)
class Allowed:
    patterns: tuple[str, ...]  # path globs: `*` within one name, `**` across names
    kinds: frozenset[str]  # the kinds of difference allowed there
    reason: str


def allow(patterns: str, kinds: str, reason: str) -> Allowed:
    return Allowed(tuple(patterns.split()), frozenset(kinds.split()), reason)


# Paths where builders legitimately differ, and in what. Everything else must be the same. (A .pyc that matches
# its source is compared without the source mtime it records: walk._fresh_pyc.)
ALLOWED = (
    allow("/", "mode", "containers/storage makes each layer's root 0555 and buildah's ADD keeps it; the tar has 0755"),
    allow("/dev", "missing", "buildah's RUN leaves its mountpoint for /dev in the layer (the base has no /dev)"),
    allow(
        "/etc/hosts /etc/resolv.conf /etc/hostname",
        "missing",
        "buildah's RUN leaves an empty mountpoint for each file it binds from the host in the layer",
    ),
    allow(
        "/opt/vendor/bin/tool*",
        "mode hardlink",
        "kernel overlayfs (buildah; imagebuild as root) splits a lower hard link when a RUN chmods one name; unionfs"
        " (root-unionfs, rootless) keeps one inode",
    ),
    allow("/var/log/**", "content", "apt, dpkg and alternatives logs record the time of the run"),
    allow("/var/cache/apt/*.bin", "content", "apt's binary caches record the mtimes of the package lists"),
    allow("/var/cache/ldconfig/aux-cache", "content", "ldconfig's cache records the mtimes of the libraries"),
    allow("/root/.npm/_logs/*", "missing extra", "npm names its debug logs after the time of the run"),
    allow("/etc/shadow*", "content", "useradd records the day of the change: builds either side of midnight differ"),
)


@dataclass(frozen=True)
class Difference:
    path: str
    kind: str
    reference: str
    candidate: str


def differences(reference: dict[str, Entry], candidate: dict[str, Entry]) -> list[Difference]:
    """Every way the candidate differs from the reference, by path (a path missing on one side is one difference,
    not one per field)."""
    found = []
    for path in sorted(reference.keys() | candidate.keys()):
        a, b = reference.get(path), candidate.get(path)
        if a is None or b is None:
            found.append(Difference(path, "extra" if a is None else "missing", show(a), show(b)))
            continue
        if a.kind != b.kind:
            found.append(Difference(path, "type", show(a), show(b)))
            continue
        if (a.uid, a.gid) != (b.uid, b.gid):
            found.append(Difference(path, "owner", f"{a.uid}:{a.gid}", f"{b.uid}:{b.gid}"))
        if a.mode != b.mode:
            found.append(Difference(path, "mode", f"{a.mode:04o}", f"{b.mode:04o}"))
        if a.sha256 != b.sha256:
            found.append(Difference(path, "content", a.sha256[:12], b.sha256[:12]))
        if a.target != b.target:
            found.append(Difference(path, "target", a.target, b.target))
        if a.rdev != b.rdev:
            found.append(Difference(path, "device", a.rdev, b.rdev))
        if a.xattrs != b.xattrs:
            found.append(Difference(path, "xattr", show_xattrs(a.xattrs), show_xattrs(b.xattrs)))
        if a.hardlink != b.hardlink:
            found.append(Difference(path, "hardlink", a.hardlink or "(own inode)", b.hardlink or "(own inode)"))
    return found


def config_differences(reference: dict[str, object], candidate: dict[str, object]) -> list[Difference]:
    def value(config: dict[str, object], name: str) -> object:
        found = config.get(name)
        if name == "Labels" and isinstance(found, dict):
            found = {k: v for k, v in found.items() if k not in BUILDER_LABELS}
        return found or None  # absent, null, "", [] and {} all mean unset

    return [
        Difference(name, "config", json.dumps(value(reference, name)), json.dumps(value(candidate, name)))
        for name in CONFIG_FIELDS
        if value(reference, name) != value(candidate, name)
    ]


@cache
def _glob(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    wild = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wild.get(p, re.escape(p)) for p in parts) + r"\Z")


def allowed(difference: Difference) -> Allowed | None:
    for rule in ALLOWED:
        if difference.kind in rule.kinds and any(_glob(p).match(difference.path) for p in rule.patterns):
            return rule
    return None


def unexplained(found: list[Difference]) -> list[Difference]:
    return [d for d in found if allowed(d) is None]


def show(entry: Entry | None) -> str:
    if entry is None:
        return "(absent)"
    text = f"{entry.kind} {entry.uid}:{entry.gid} {entry.mode:04o}"
    if entry.kind == "l":
        text += f" -> {entry.target}"
    if entry.kind == "f":
        text += f" {entry.sha256[:12]}"
    if entry.rdev:
        text += f" {entry.rdev}"
    if entry.xattrs:
        text += f" {show_xattrs(entry.xattrs)}"
    return text


# capability(7) numbers, for reading security.capability
CAPABILITIES = (  # noqa: SIM905 (the capability(7) names in order read best as one text)
    "chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap linux_immutable net_bind_service "
    "net_broadcast net_admin net_raw ipc_lock ipc_owner sys_module sys_rawio sys_chroot sys_ptrace sys_pacct "
    "sys_admin sys_boot sys_nice sys_resource sys_time sys_tty_config mknod lease audit_write audit_control setfcap "
    "mac_override mac_admin syslog wake_alarm block_suspend audit_read perfmon bpf checkpoint_restore"
).split()


def show_capability(value: bytes) -> str:
    """`cap_net_raw=ep` and the like, from a vfs_cap_data value."""
    if len(value) < 12:
        return value.hex()
    magic, permitted, inheritable = struct.unpack_from("<III", value)
    if len(value) >= 20:
        hi_permitted, hi_inheritable = struct.unpack_from("<II", value, 12)
        permitted |= hi_permitted << 32
        inheritable |= hi_inheritable << 32
    names = [f"cap_{CAPABILITIES[i]}" if i < len(CAPABILITIES) else str(i) for i in range(64) if permitted >> i & 1]
    flags = "ep" if magic & 1 else "p"
    text = ",".join(names) + f"={flags}" if names else "(none)"
    if magic >> 24 == 3 and len(value) >= 24:
        text += f" rootid={struct.unpack_from('<I', value, 20)[0]}"
    return text + (f" i={inheritable:#x}" if inheritable else "")


def show_xattrs(xattrs: dict[str, str]) -> str:
    if not xattrs:
        return "(no xattrs)"
    parts = []
    for name, value in sorted(xattrs.items()):
        if name == "security.capability" and not value.startswith("<"):
            parts.append(f"{name}={show_capability(bytes.fromhex(value))}")
        else:
            parts.append(f"{name}={value[:40]}{'...' if len(value) > 40 else ''}")
    return " ".join(parts)


def report(found: list[Difference], reference: str, candidate: str, limit: int = 40) -> str:
    """Counts per kind, then the first `limit` differences, one a line: `kind path: reference | candidate`."""
    counts = Counter(d.kind for d in found)
    lines = [
        f"{len({d.path for d in found})} entries differ ({len(found)} differences) between {reference} (left) "
        f"and {candidate} (right): " + ", ".join(f"{k} {counts[k]}" for k in KINDS if counts[k])
    ]
    width = max((len(d.kind) for d in found[:limit]), default=0)
    for d in found[:limit]:
        lines.append(f"  {d.kind:<{width}} {d.path}: {d.reference} | {d.candidate}")
    if len(found) > limit:
        lines.append(f"  ... and {len(found) - limit} more")
    return "\n".join(lines)
