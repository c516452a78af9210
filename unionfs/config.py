"""Mount options: parsed from the fuse-overlayfs/kernel `-o` syntax and checked before anything is mounted.

Every ConfigError message is one line a user can act on: what is wrong, where, and what to do.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import shutil
from dataclasses import dataclass, field

from .errors import ConfigError
from .idmap import IdMap, IdMapError, Mapping
from .workdir import WORK_SUBDIR

#: Options containers/storage, mount(8) or fuse-overlayfs callers pass that change nothing here.
IGNORED_OPTIONS = frozenset(
    {
        "rw",
        "dev",
        "nodev",
        "suid",
        "nosuid",
        "exec",
        "noexec",
        "atime",
        "noatime",
        "relatime",
        "strictatime",
        "lazytime",
        "nodiratime",
        "volatile",
        "userxattr",
        "default_permissions",
        "noacl",
        "auto",
        "noauto",
        "context",
        "fscontext",
        "defcontext",
        "rootcontext",
        "metacopy",
        "redirect_dir",
        "index",
        "xino",
        "nfs_export",
        "uuid",
        "noxattrs",
        "plugins",
        "static_nlink",
        "threaded",
        "debug_fd",
    }
)
WHITEOUT_FORMS = ("auto", "chardev", "file")
MAPPING_KEYS = ("uidmapping=", "gidmapping=")
MAPPING_TAIL = re.compile(r"^\d+:\d+:\d+(:\d+:\d+:\d+)*$")


@dataclass
class MountConfig:
    mountpoint: str
    lowers: list[str] = field(default_factory=list)  # top first
    upper: str | None = None
    work: str | None = None
    read_only: bool = False
    allow_other: bool = False
    whiteout: str = "auto"
    fsync: bool = True
    timeout: float | None = None
    metacopy: bool = False
    ids: IdMap = field(default_factory=IdMap)
    debug: bool = False
    fetcher: str | None = None  # MODULE.CALLABLE making the Fetcher of lazy lowers (fetch.py)
    fetchspec: str = ""  # what it is called with

    @property
    def layer_dirs(self) -> list[str]:
        return ([self.upper] if self.upper else []) + self.lowers


def split_escaped(text: str, sep: str) -> list[str]:
    """Split on `sep` except where it is escaped with a backslash, as the kernel's overlayfs options are."""
    parts, current, chars = [], [], iter(text)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def join_mapping_items(items: list[str]) -> list[str]:
    """`uidmapping=0:1000:1,1:100000:65536` continues past a comma: glue such triples back on."""
    joined: list[str] = []
    for item in items:
        if joined and "=" not in item and MAPPING_TAIL.match(item) and joined[-1].startswith(MAPPING_KEYS):
            joined[-1] += ":" + item
        else:
            joined.append(item)
    return joined


def apply_options(config: MountConfig, options: str) -> None:
    """Fold one `-o a=b,c` string into `config`."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in options):
        raise ConfigError(f"mount options {options!r} contain a control character: remove it")
    for item in join_mapping_items(split_escaped_keep(options, ",")):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key in ("uidmapping", "gidmapping"):
            try:
                mapping = Mapping.parse(value)
            except IdMapError as exc:
                raise ConfigError(f"{key}={value}: {exc}") from None
            if key == "uidmapping":
                config.ids = dataclasses.replace(config.ids, uids=mapping)
            else:
                config.ids = dataclasses.replace(config.ids, gids=mapping)
        elif key in ("squash_to_root", "squash_to_uid", "squash_to_gid"):
            apply_squash(config, key, value)
        elif key == "lowerdir":
            dirs = [d for d in split_escaped(value, ":") if d]
            if not dirs:
                raise ConfigError("lowerdir= is empty: name at least one lower layer directory")
            config.lowers.extend(dirs)
        elif key == "upperdir":
            config.upper = unescape(value)
        elif key == "workdir":
            config.work = unescape(value)
        elif key == "ro":
            config.read_only = True
        elif key == "allow_other":
            config.allow_other = True
        elif key == "whiteout":
            if value not in WHITEOUT_FORMS:
                raise ConfigError(f"whiteout={value}: use one of {', '.join(WHITEOUT_FORMS)}")
            config.whiteout = value
        elif key == "fsync":
            config.fsync = value not in ("0", "no", "false")
        elif key == "timeout":
            try:
                config.timeout = float(value)
            except ValueError:
                raise ConfigError(f"timeout={value}: give a number of seconds") from None
        elif key == "metacopy":
            if value not in ("on", "off"):
                raise ConfigError(f"metacopy={value}: use metacopy=on or metacopy=off")
            config.metacopy = value == "on"
        elif key == "debug":
            config.debug = True
        elif key == "fetcher":
            config.fetcher = value
        elif key == "fetchspec":
            config.fetchspec = unescape(value)
        elif key not in IGNORED_OPTIONS:
            raise ConfigError(f"unknown mount option '{item}': see 'unionfs mount --help' for the options")


def apply_squash(config: MountConfig, key: str, value: str) -> None:
    if key == "squash_to_root":
        config.ids = dataclasses.replace(config.ids, squash_uid=0, squash_gid=0)
        return
    if not value.isdigit():
        raise ConfigError(f"{key}={value}: give a numeric id")
    if key == "squash_to_uid":
        config.ids = dataclasses.replace(config.ids, squash_uid=int(value))
    else:
        config.ids = dataclasses.replace(config.ids, squash_gid=int(value))


def split_escaped_keep(text: str, sep: str) -> list[str]:
    """Split on unescaped `sep`, keeping escapes in the parts (lowerdir= unescapes them itself)."""
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    return split_escaped(text, "\0")[0]


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _check_dir(kind: str, path: str) -> str:
    try:
        os.stat(path)
    except PermissionError:
        raise ConfigError(
            f"{kind} '{path}' cannot be reached: you may not search a directory above it; "
            "fix its permissions or use another place"
        ) from None
    except OSError:
        raise ConfigError(f"{kind} '{path}' does not exist: create it or fix the path") from None
    if not os.path.isdir(path):
        raise ConfigError(f"{kind} '{path}' is not a directory: give a directory")
    return os.path.realpath(path)


#: what to do about two of a mount's directories that overlap, by their kinds
OVERLAP_ADVICE = {
    ("upperdir", "workdir"): "use two separate directories",
    ("upperdir", "lowerdir"): "keep the upper outside every lower layer",
    ("workdir", "lowerdir"): "keep the work dir outside every lower layer",
    ("lowerdir", "lowerdir"): "list each layer once, none inside another",
}


def mount_roots() -> list[tuple[str, str, str]]:
    """(mount point, filesystem, root of the mount inside its filesystem) of every mount, in mount order."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split(" ")
            mounts.append((unescape_octal(fields[4]), fields[2], unescape_octal(fields[3])))
    return mounts


def unescape_octal(field: str) -> str:
    """A path as /proc/self/mountinfo writes it, with its \\ooo escapes undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def fs_location(path: str, mounts: list[tuple[str, str, str]]) -> tuple[str, str]:
    """Where real path `path` lies: its filesystem and its path there, the same for a directory reached through a
    bind mount as reached directly (the kernel's overlap checks see through bind mounts too)."""
    point, device, root = "/", "", "/"
    for mount in mounts:  # the deepest mount holding it; of mounts stacked on one point, the last (the top)
        if _inside(path, mount[0]) and len(mount[0]) >= len(point):
            point, device, root = mount
    rest = path[len(point) :].strip("/")
    return device, os.path.join(root, rest) if rest else root


def check_overlaps(upper: str | None, work: str | None, lowers: list[str]) -> None:
    """Refuse directories that overlap, as kernel overlayfs does (the same directory twice; a lower inside
    another, inside the upper or inside the work dir; the upper and the work dir nested), and also what the
    kernel lets through but would write into a read-only layer: the upper or the work dir inside a lower."""
    try:
        mounts = mount_roots()
    except OSError:
        mounts = []
    kinds = ([("upperdir", upper), ("workdir", work)] if upper and work else []) + [("lowerdir", d) for d in lowers]
    dirs = [(kind, path, fs_location(path, mounts)) for kind, path in kinds if path]
    for index, (kind, path, (device, at)) in enumerate(dirs):
        for other_kind, other, (other_device, other_at) in dirs[index + 1 :]:
            if device != other_device or not (_inside(at, other_at) or _inside(other_at, at)):
                continue
            advice = OVERLAP_ADVICE[(kind, other_kind)]
            if path == other and kind == other_kind:
                raise ConfigError(f"{kind} '{path}' is given twice: list each layer once")
            raise ConfigError(f"{kind} '{path}' and {other_kind} '{other}' overlap: {advice}")


def mounted_points() -> set[str]:
    points = set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split(" ")
            points.add(unescape_octal(fields[4]))
    return points


def user_allow_other() -> bool:
    try:
        with open("/etc/fuse.conf", encoding="utf-8") as conf:
            return any(line.split("#")[0].strip() == "user_allow_other" for line in conf)
    except OSError:
        return False


def check_fuse_device() -> None:
    if not os.path.exists("/dev/fuse"):
        raise ConfigError(
            "/dev/fuse does not exist: load the fuse module (modprobe fuse) or, in a container, "
            "pass the device in (--device /dev/fuse)"
        )
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise ConfigError(
            "/dev/fuse is not readable and writable by you: ask an administrator to "
            "'chmod 0666 /dev/fuse' (the usual mode) or run as a user who may open it"
        )
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        raise ConfigError("fusermount3 is not installed: install it (apt-get install fuse3)")


def validate(config: MountConfig) -> MountConfig:
    """Check the layers, work dir and mount point; returns the config with absolute, resolved paths."""
    if not config.lowers:
        raise ConfigError("no lower layer given: pass -o lowerdir=DIR[:DIR...] (top first)")
    if (config.upper is None) != (config.work is None):
        given, missing = ("upperdir", "workdir") if config.work is None else ("workdir", "upperdir")
        raise ConfigError(f"{given} given without {missing}: pass both, or neither for a read-only mount")
    lowers = [_check_dir("lowerdir", d) for d in config.lowers]
    upper = _check_dir("upperdir", config.upper) if config.upper else None
    work = _check_dir("workdir", config.work) if config.work else None
    try:
        os.stat(config.mountpoint)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            point = os.path.abspath(config.mountpoint)
            raise ConfigError(
                f"'{point}' is a dead mount (its daemon is gone): clear it with 'unionfs umount {point}'"
            ) from None
        raise ConfigError(f"mount point '{config.mountpoint}' does not exist: create it (mkdir -p) first") from None
    if not os.path.isdir(config.mountpoint):
        raise ConfigError(f"mount point '{config.mountpoint}' is not a directory: give an empty directory")
    mountpoint = os.path.realpath(config.mountpoint)
    check_overlaps(upper, work, lowers)
    for layer in [*lowers, *([upper, work] if upper and work else [])]:
        if _inside(mountpoint, layer):
            raise ConfigError(f"mount point '{mountpoint}' is inside layer '{layer}': mount elsewhere")
    if upper and work:
        if os.stat(upper).st_dev != os.stat(work).st_dev:
            raise ConfigError(
                f"workdir '{work}' is on another filesystem than upperdir '{upper}': put both on one filesystem"
            )
        foreign = sorted(set(os.listdir(work)) - {WORK_SUBDIR})
        if foreign:
            raise ConfigError(
                f"workdir '{work}' holds files that are not ours ({', '.join(foreign[:3])}): give an empty directory"
            )
        if not os.access(upper, os.W_OK) or not os.access(work, os.W_OK):
            raise ConfigError(f"upperdir '{upper}' or workdir '{work}' is not writable by you: fix its owner")
    if config.allow_other and os.geteuid() != 0 and not user_allow_other():
        raise ConfigError(
            "allow_other needs 'user_allow_other' in /etc/fuse.conf for ordinary users: ask an "
            "administrator to add that line, or mount without allow_other"
        )
    if mountpoint in mounted_points():
        raise ConfigError(f"'{mountpoint}' is already a mount point: unmount it first (unionfs umount {mountpoint})")
    check_fuse_device()
    config.lowers, config.upper, config.work, config.mountpoint = lowers, upper, work, mountpoint
    return config
