"""Run a command in a rootfs without root: bubblewrap, with a user namespace when not privileged.

The host network is shared (no network namespace), so a service an image EXPOSEs is reachable on localhost.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from imagebuild.errors import BuildError


def union_options() -> list[str]:
    """Mount options for a rootfs the sandbox runs in: as an ordinary user, the sandbox's root is the user,
    so the image's root (id 0 in the layers) is shown as the user and what it creates is stored as root's."""
    if os.geteuid() == 0:
        return []
    return [f"uidmapping=0:{os.geteuid()}:1", f"gidmapping=0:{os.getegid()}:1"]


def bwrap_command(rootfs: str, argv: Sequence[str], env: Mapping[str, str], workdir: str) -> list[str]:
    tool = shutil.which("bwrap")
    if tool is None:
        raise BuildError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    command = [tool]
    if os.geteuid() != 0:
        command += ["--unshare-user", "--uid", "0", "--gid", "0"]  # the image's root is the building user
    command += ["--bind", rootfs, "/", "--dev", "/dev", "--proc", "/proc", "--chdir", workdir or "/"]
    command += ["--die-with-parent", "--clearenv"]
    for key, value in env.items():
        command += ["--setenv", key, value]
    return [*command, "--", *argv]


def run(rootfs: str, argv: Sequence[str], env: Mapping[str, str], workdir: str) -> int:
    """Run `argv` in `rootfs`; its output goes to ours. Returns its exit status."""
    return subprocess.run(bwrap_command(rootfs, argv, env, workdir), stdin=subprocess.DEVNULL, check=False).returncode


def spawn(rootfs: str, argv: Sequence[str], env: Mapping[str, str], workdir: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(bwrap_command(rootfs, argv, env, workdir), stdin=subprocess.DEVNULL)
