"""Run a command in a rootfs without root: bubblewrap, with a user namespace when not privileged.

The host network is shared (no network namespace), so a service an image EXPOSEs is reachable on localhost.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence

from imagebuild.errors import BuildError

ROOTFS_PREFIX = "imagebuild-rootfs-"


def mountpoint() -> str:
    """An empty directory to mount a rootfs on, reachable by the image's USER (the store may be private). Its
    name carries this process's pid (`imagebuild-rootfs-PID-XXXXXXXX`), so `imagebuild check` can tell one
    whose maker is gone."""
    path = tempfile.mkdtemp(prefix=f"{ROOTFS_PREFIX}{os.getpid()}-")
    os.chmod(path, 0o755)
    return path


def union_options(user: str | None = None) -> list[str]:
    """Mount options for a rootfs the sandbox runs in: as an ordinary user, the sandbox's root is the user,
    so the image's root (id 0 in the layers) is shown as the user and what it creates is stored as root's.
    As root with a USER, the mount must let that user in (allow_other; the kernel then checks its rights)."""
    if os.geteuid() == 0:
        return ["allow_other"] if user else []
    return [f"uidmapping=0:{os.geteuid()}:1", f"gidmapping=0:{os.getegid()}:1"]


def resolve_user(rootfs: str, spec: str | None) -> tuple[int, int]:
    """USER `name[:group]` or `uid[:gid]`, looked up in the image's /etc/passwd and /etc/group."""
    if not spec:
        return 0, 0
    user, _, group = spec.partition(":")

    def lookup(table: str, name: str) -> tuple[int, int] | None:
        try:
            with open(os.path.join(rootfs, "etc", table), encoding="utf-8", errors="replace") as f:
                for line in f:
                    fields = line.rstrip("\n").split(":")
                    if fields[0] == name and len(fields) > 3:
                        return int(fields[2]), int(fields[3])
        except (OSError, ValueError):
            pass
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


def bwrap_command(
    rootfs: str, argv: Sequence[str], env: Mapping[str, str], workdir: str, user: tuple[int, int] = (0, 0)
) -> list[str]:
    tool = shutil.which("bwrap")
    if tool is None:
        raise BuildError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    uid, gid = user
    command = [tool]
    if os.geteuid() != 0:
        command += ["--unshare-user", "--uid", str(uid), "--gid", str(gid)]  # the building user plays the image's
        if uid == 0:
            # bubblewrap leaves the namespace's root no capability; a package's `setcap` (iputils-ping's postinst)
            # needs CAP_SETFCAP there, and the kernel then hands the mount a v3 capability for the building user,
            # which unionfs keeps as the image root's
            command += ["--cap-add", "CAP_SETFCAP"]
    elif user != (0, 0):
        # the image's USER for real: drop to it on the host, and let its own namespace map the same ids
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
    command += ["--die-with-parent", "--clearenv"]
    for key, value in env.items():
        command += ["--setenv", key, value]
    return [*command, "--", *argv]


def prepare(rootfs: str) -> None:
    """The mountpoints bubblewrap needs, made beforehand: a USER may not create them in a root-owned /."""
    for name in ("dev", "proc"):
        path = os.path.join(rootfs, name)
        if not os.path.lexists(path):
            os.mkdir(path, 0o755)


def spawn(
    rootfs: str, argv: Sequence[str], env: Mapping[str, str], workdir: str, user: tuple[int, int] = (0, 0)
) -> subprocess.Popen[bytes]:
    prepare(rootfs)
    return subprocess.Popen(bwrap_command(rootfs, argv, env, workdir, user), stdin=subprocess.DEVNULL)
