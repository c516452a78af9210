"""The RUN mounts' own process: `python -m imagebuild.cli.mountns PLAN -- COMMAND...`.

It starts where the sandbox starts (as root; or, rootless, as the root of the build's user namespace, through
nsenter), takes a mount namespace of its own, binds each mount of the plan onto the rootfs (above the union mount,
so nothing reaches the layer), and executes COMMAND (bubblewrap, maybe through setpriv), whose recursive bind of
the rootfs carries the mounts along. No other process sees them, and they go with the RUN's last process.

Targets are opened component by component without following symlinks (the builder resolved the image's links
inside the image first), so a link in an image never sends a mount onto the host's own tree. The environment the
plan names for secrets reaches bubblewrap through `--args FD`, never its command line.

PLAN is a JSON file: {"root": DIR, "mounts": [{"kind": "bind"|"tmpfs", "source": [BASE, REL], "target": REL,
"readonly": BOOL, "size": N|null}], "chown": [[PATH, UID, GID, MODE]], "seed": [[BASE, REL, CACHE]],
"env": FILE|null}. This module uses only the
standard library: it starts once per RUN.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import stat
import subprocess
import sys
from typing import Any

from imagebuild.errors import ImagebuildError

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
# statvfs flag -> mount flag: a read-only remount of a bind must keep the flags the kernel locked on it
_KEEP = {
    os.ST_NOSUID: MS_NOSUID,
    os.ST_NODEV: MS_NODEV,
    os.ST_NOEXEC: MS_NOEXEC,
    os.ST_NOATIME: MS_NOATIME,
    os.ST_NODIRATIME: MS_NODIRATIME,
    os.ST_RELATIME: MS_RELATIME,
}
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class Failure(ImagebuildError):
    """The RUN's mounts could not be made; the message says which and why."""

    status = 125


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _mount(
    libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    if libc.mount(
        source.encode() if source else None,
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    ):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def open_beneath(base: str, rel: str) -> int:
    """An O_PATH fd of `base/rel`, no component of `rel` followed if it is a symlink."""
    fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in [p for p in rel.split("/") if p]:
            child = os.open(part, _PATH, dir_fd=fd)
            os.close(fd)
            fd = child
            if stat.S_ISLNK(os.fstat(fd).st_mode):  # O_PATH | O_NOFOLLOW opens the link itself
                raise OSError(errno.ELOOP, "a symbolic link on the way")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _target(root: str, rel: str, is_dir: bool) -> int:
    """The target's fd; one under an earlier mount of this RUN (a cache, a tmpfs) is made there, as BuildKit does."""
    try:
        return open_beneath(root, rel)
    except FileNotFoundError:
        parent, name = os.path.split(rel)
        fd = open_beneath(root, parent)
        try:
            if is_dir:
                os.mkdir(name, 0o755, dir_fd=fd)
            else:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd))
        finally:
            os.close(fd)
        return open_beneath(root, rel)


def apply(plan: dict[str, Any]) -> None:
    for path, uid, gid, mode in plan.get("chown", []):
        os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(path, mode)
    for base, rel, dest in plan.get("seed", []):  # a new cache's first content, owners kept: `cp -a` as root here
        done = subprocess.run(["cp", "-a", "--", os.path.join(base, rel, "."), dest + "/"], capture_output=True)
        if done.returncode != 0:
            raise Failure(f"cannot fill the cache from its source: {done.stderr.decode(errors='replace').strip()}")
    mounts = plan.get("mounts", [])
    if not mounts:
        return
    libc = _libc()
    if libc.unshare(CLONE_NEWNS):
        err = ctypes.get_errno()
        raise Failure(f"cannot take a mount namespace for the RUN's mounts: {os.strerror(err)}")
    _mount(libc, "none", "/", None, MS_REC | MS_PRIVATE, None)
    for mount in mounts:
        where = "/" + mount["target"]
        try:
            target = _target(plan["root"], mount["target"], mount.get("is_dir", True))
        except OSError as exc:
            raise Failure(f"cannot reach the mount target {where}: {exc.strerror}") from None
        try:
            at = f"/proc/self/fd/{target}"
            if mount["kind"] == "tmpfs":
                size = mount.get("size")
                _mount(libc, "tmpfs", at, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size}" if size else None)
                continue
            base, rel = mount["source"]
            try:
                source = open_beneath(base, rel)
            except OSError as exc:
                raise Failure(f"cannot reach the source of the mount on {where}: {exc.strerror}") from None
            try:
                _mount(libc, f"/proc/self/fd/{source}", at, None, MS_BIND | MS_REC, None)
            finally:
                os.close(source)
            if mount.get("readonly"):
                reopened = open_beneath(plan["root"], mount["target"])  # the fd now names what is under the mount
                try:
                    at = f"/proc/self/fd/{reopened}"
                    locked = os.statvfs(at).f_flag
                    keep = sum(flag for st, flag in _KEEP.items() if locked & st)
                    _mount(libc, None, at, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep, None)
                finally:
                    os.close(reopened)
        except OSError as exc:
            raise Failure(f"cannot mount on {where}: {exc.strerror}") from None
        finally:
            os.close(target)


def with_env(command: list[str], env_file: str | None) -> list[str]:
    """bubblewrap's command with `--args FD` carrying `--setenv NAME VALUE` for each secret given as a variable."""
    if not env_file:
        return command
    with open(env_file, encoding="utf-8", errors="surrogateescape") as f:
        env: dict[str, str] = json.load(f)
    start = next((i for i, word in enumerate(command) if os.path.basename(word) == "bwrap"), None)
    at = command.index("--clearenv", start) if start is not None and "--clearenv" in command[start:] else None
    if at is None:  # bubblewrap applies its options in order: the variables go after it clears the environment
        raise Failure("no bubblewrap --clearenv in the RUN's command to give the secrets after")
    fd = os.memfd_create("imagebuild-args", 0)  # inherited by bubblewrap, through setpriv
    words = [w for name, value in env.items() for w in ("--setenv", name, value)]
    os.write(fd, b"".join(w.encode("utf-8", "surrogateescape") + b"\0" for w in words))
    os.lseek(fd, 0, os.SEEK_SET)
    return [*command[: at + 1], "--args", str(fd), *command[at + 1 :]]


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m imagebuild.cli.mountns PLAN -- COMMAND...", file=sys.stderr)
        return 2
    try:
        with open(argv[0], encoding="utf-8") as f:
            plan = json.load(f)
        apply(plan)
        command = with_env(argv[2:], plan.get("env"))
    except (Failure, OSError) as exc:
        print(f"imagebuild: RUN mounts: {exc}", file=sys.stderr)
        return 125
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
