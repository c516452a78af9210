"""Run a command in a rootfs without root: bubblewrap, with a user namespace when not privileged.

The host network is shared unless the caller enters a network namespace first (network.py, `run -p`), so a service
an image EXPOSEs is reachable on localhost.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import shutil
import subprocess
import tempfile
import termios
from collections.abc import Callable, Mapping, Sequence

from imagebuild.errors import BuildError

ROOTFS_PREFIX = "imagebuild-rootfs-"
ROOTFS_NAME = "rootfs"  # the mount point's name in its private directory

CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


def mountpoint(private: bool = True) -> str:
    """An empty directory to mount a rootfs on: `ROOTFS_NAME` in a directory only this user may enter
    (`imagebuild-rootfs-PID-XXXXXXXX`, mode 0700), since the mount lets every id of the container in and no
    other user of the host may reach the container's files. The directory's name carries this process's pid,
    so `imagebuild check` can tell one whose maker is gone. Not `private` (0755) for a mount made in a mount
    namespace of the container's own (userns.py), which no other user sees, and where the container's ids must
    pass the directory."""
    home = tempfile.mkdtemp(prefix=f"{ROOTFS_PREFIX}{os.getpid()}-")  # 0700
    if not private:
        os.chmod(home, 0o755)
    path = os.path.join(home, ROOTFS_NAME)
    os.mkdir(path, 0o755)
    return path


def remove_mountpoint(path: str) -> None:
    """Remove what `mountpoint` made, once unmounted (never anything in a rootfs still mounted there)."""
    for directory in (path, os.path.dirname(path)):
        with contextlib.suppress(OSError):
            os.rmdir(directory)


def union_options(user: str | None = None, namespace: bool = False) -> list[str]:
    """Mount options for a rootfs the sandbox runs in: as an ordinary user, the sandbox's root is the user,
    so the image's root (id 0 in the layers) is shown as the user and what it creates is stored as root's.
    As root, every id of the container may use the mount (allow_other; the kernel checks their rights, as
    on any filesystem, since a privileged mount has `default_permissions`), whatever the USER: a root step
    may drop to another id itself (su, setpriv, apt's `_apt`). The mount point's private directory keeps
    other users of the host out."""
    del user
    if os.geteuid() == 0 or namespace:  # in the container's namespace (userns.py), ids arrive as the container's
        return ["allow_other"]
    return [f"uidmapping=0:{os.geteuid()}:1", f"gidmapping=0:{os.getegid()}:1"]


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def resolve_user(rootfs: str, spec: str | None, read: Callable[[str], str | None] = read_text) -> tuple[int, int]:
    """USER `name[:group]` or `uid[:gid]`, looked up in the image's /etc/passwd and /etc/group (read with `read`,
    for a rootfs only a namespace sees)."""
    if not spec:
        return 0, 0
    user, _, group = spec.partition(":")

    def lookup(table: str, name: str) -> tuple[int, int] | None:
        for line in (read(os.path.join(rootfs, "etc", table)) or "").splitlines():
            fields = line.split(":")
            if fields[0] == name and len(fields) > 3:
                try:
                    return int(fields[2]), int(fields[3])
                except ValueError:
                    return None
        return None

    found = (int(user), int(user)) if user.isdigit() else lookup("passwd", user)
    if found is None:
        raise BuildError(f"USER {spec}: no user '{user}' in the image's /etc/passwd: add it, or use a numeric id")
    uid, gid = found
    if group:
        entry = (int(group), 0) if group.isdigit() else lookup("group", group)
        if entry is None:
            raise BuildError(f"USER {spec}: no group '{group}' in the image's /etc/group: use a numeric id")
        gid = entry[0]
    return uid, gid


# The host's name-resolution files, which docker and buildah give every RUN and container: an image from a registry
# has no /etc/resolv.conf, and without one apt-get cannot even resolve its mirror.
NAME_FILES = ("etc/resolv.conf", "etc/hosts")


def names_dir() -> str:
    """A directory for the copies of the host's name files, readable by the command whatever its user. Named as a
    RUN's private dir (`imagebuild-run-PID-XXXX`), so that `imagebuild check` finds one a killed command left."""
    path = tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-")
    os.chmod(path, 0o755)
    return path


def name_files(scratch: str, is_link: Callable[[str], bool]) -> list[tuple[str, str]]:
    """Copies of the host's name files in `scratch` (a directory the sandbox can read), with where the command
    sees them: copies, so that what a command writes there reaches neither the host nor the image. A name the
    image has as a symlink is left as the image has it. `is_link(relative path)` looks in the rootfs."""
    pairs = []
    for name in NAME_FILES:
        host = "/" + name
        if not os.path.isfile(host) or is_link(name):
            continue
        copy = os.path.join(scratch, os.path.basename(name))
        shutil.copyfile(host, copy)
        os.chmod(copy, 0o644)
        pairs.append((copy, host))
    return pairs


def bwrap_command(
    rootfs: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    workdir: str,
    user: tuple[int, int] = (0, 0),
    inside: bool = False,
    binds: Sequence[tuple[str, str]] = (),
    extra: Sequence[str] = (),
    options: Sequence[str] = (),
) -> list[str]:
    """bubblewrap's command line. `inside`: it runs as the root of a user namespace that maps every id of the
    container (userns.py), where the rootfs's directory is not private (the mount is the namespace's alone).
    `extra`: further bubblewrap options for the rootfs (a rootless RUN's mounts, builder/runmounts.py).
    `options`: more of bubblewrap's, after the rootfs and `binds` are set up (a `run`'s -v binds, say)."""
    tool = shutil.which("bwrap")
    if tool is None:
        raise BuildError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    uid, gid = user
    command = [tool]
    if os.geteuid() != 0 and not inside:
        command += ["--unshare-user", "--uid", str(uid), "--gid", str(gid)]  # the building user plays the image's
        if uid == 0:
            # bubblewrap leaves the namespace's root no capability; a package's `setcap` (iputils-ping's postinst)
            # needs CAP_SETFCAP there, and the kernel then hands the mount a v3 capability for the building user,
            # which unionfs keeps as the image root's
            command += ["--cap-add", "CAP_SETFCAP"]
    elif user != (0, 0):
        # the image's USER for real: drop to it on the host, and let its own namespace map the same ids; the
        # rootfs is reached through its private directory, where `preexec` shows it to this command alone
        rootfs = rootfs if inside else os.path.dirname(rootfs)
        command = [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--",
            tool,
            "--unshare-user",
            "--uid",
            str(uid),
            "--gid",
            str(gid),
        ]
    command += ["--bind", rootfs, "/", "--dev", "/dev", "--proc", "/proc", "--chdir", workdir or "/"]
    for source, target in binds:
        command += ["--bind", source, target]
    command += [*extra, *options, "--die-with-parent", "--clearenv"]
    for key, value in env.items():
        command += ["--setenv", key, value]
    return [*command, "--", *argv]


def preexec(rootfs: str, user: tuple[int, int]) -> Callable[[], None] | None:
    """What the sandbox's process does before it starts bubblewrap, or None.

    As root with a USER, bubblewrap runs as that user and resolves the rootfs's path as it: it cannot pass the
    0700 directory the mount point is in. So the process first takes a mount namespace of its own and binds
    the rootfs over that directory there: the user reaches it, and no other process sees the change."""
    if os.geteuid() != 0 or user == (0, 0):
        return None
    libc = _libc()  # loaded here, not after the fork
    source, target = os.fsencode(rootfs), os.fsencode(os.path.dirname(rootfs))

    def show_rootfs() -> None:
        if (
            libc.unshare(CLONE_NEWNS) != 0
            or libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0
            or libc.mount(source, target, None, MS_BIND | MS_REC, None) != 0
        ):
            errno = ctypes.get_errno()
            raise OSError(errno, f"cannot show the rootfs to the sandbox: {os.strerror(errno)}")

    return show_rootfs


def _libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c")
    if name is None:
        raise BuildError("the C library was not found (ctypes)")
    return ctypes.CDLL(name, use_errno=True)


def prepare(rootfs: str, binds: Sequence[tuple[str, str]] = ()) -> None:
    """The mountpoints bubblewrap needs, made beforehand: a USER may not create them in a root-owned /. The
    files `binds` cover are made empty where the image has none (the build drops them from the layer again)."""
    for name in ("dev", "proc"):
        path = os.path.join(rootfs, name)
        if not os.path.lexists(path):
            os.mkdir(path, 0o755)
    for _, target in binds:
        path = os.path.join(rootfs, target.lstrip("/"))
        if not os.path.lexists(path):
            os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))


# Binds made before bubblewrap starts, by the container's root: SOURCE TARGET ro|rw triples, then `--`, the command.
BIND_SCRIPT = (
    'while [ "$1" != -- ]; do mount --bind -- "$1" "$2" || exit 125; '
    'if [ "$3" = ro ]; then mount -o remount,bind,ro -- "$2" || exit 125; fi; shift 3; done; shift; exec "$@"'
)


def volume_mounts(
    rootfs: str, user: tuple[int, int], inside: bool, volumes: Sequence[tuple[str, str, bool]], options: Sequence[str]
) -> tuple[list[str], list[str]]:
    """A command prefix and bubblewrap's options that bind `volumes`. bubblewrap binds them itself when it runs as
    the container's root. When it runs as the image's USER, it could not reach a source its user may not (a
    directory under /root, say) where docker's daemon binds as root: so the container's root binds them first,
    in a mount namespace of the command's own, onto the directory bubblewrap then binds as the container's /."""
    drops = user != (0, 0) and (os.geteuid() == 0 or inside)
    if not drops:
        flags = [arg for s, t, ro in volumes for arg in ("--ro-bind" if ro else "--bind", s, t)]
        return [], [*options, *flags]
    if not volumes:
        return [], list(options)
    base = rootfs if inside else os.path.dirname(rootfs)  # where bwrap_command finds the container's /
    triples = [arg for s, t, ro in volumes for arg in (s, os.path.join(base, t.lstrip("/")), "ro" if ro else "rw")]
    prefix = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", BIND_SCRIPT, "sh", *triples, "--"]
    return prefix, list(options)


def spawn(
    rootfs: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    workdir: str,
    user: tuple[int, int] = (0, 0),
    enter: Sequence[str] = (),
    binds: Sequence[tuple[str, str]] = (),
    options: Sequence[str] = (),
    inside: bool | None = None,
    stdin: int | None = subprocess.DEVNULL,
    terminal: int | None = None,
    volumes: Sequence[tuple[str, str, bool]] = (),
) -> subprocess.Popen[bytes]:
    """Start the command; `enter`: a prefix that starts it in the container's namespaces (userns.py), where
    the caller prepared the rootfs (bubblewrap, its root there, makes the files `binds` need); `inside`: whether
    that prefix makes bubblewrap the root of a namespace mapping every container id (by default, when there is
    one). `terminal`: a terminal's fd for the command's stdin, stdout and stderr and its controlling terminal,
    in a session of its own. `volumes`: host paths bound at container paths (free of symlinks), read-only or not.
    """
    inside = bool(enter) if inside is None else inside
    if not inside:
        prepare(rootfs, binds)
    bound, options = volume_mounts(rootfs, user, inside, volumes, options)
    bwrap = bwrap_command(rootfs, argv, env, workdir, user, inside=inside, binds=binds, options=options)
    command = [*enter, *bound, *bwrap]
    before = preexec(rootfs, user)
    if terminal is None:
        return subprocess.Popen(command, stdin=stdin, preexec_fn=before)

    def controlling_terminal() -> None:
        if before is not None:
            before()
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    return subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=terminal, preexec_fn=controlling_terminal)


PRIVATE_PREFIX = "imagebuild-run-"  # a RUN's private dir: its secrets and mount plan, `imagebuild-run-PID-XXXX`


def private_base() -> str:
    """Where a RUN's secrets wait: memory (/dev/shm) where it can be used, else the temporary directory."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()
