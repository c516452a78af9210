"""Leftovers of builds and runs that were killed: union mounts and daemons whose owner is gone, and the rootfs
mount points nobody removed. `imagebuild check` names them; `--repair` clears them.

Every mount a build or `run` makes is owned (unionfs.api, `--owner-fd`): its daemon unmounts by itself when the
imagebuild process is gone, however it ended. What can still be left:
- a daemon of an older version, which had no owner: it is left over when the imagebuild process that made it is
  gone, read from its rootfs dir's name (`imagebuild-rootfs-PID-...`) or, for older names, when no
  `imagebuild build` or `run` of the same store is alive;
- a daemon that outlived its owner all the same (stuck);
- a dead mount (its daemon killed) on a rootfs dir or under the store;
- the empty rootfs dir, in the temporary directory, of an imagebuild process that is gone;
- the private dir of a RUN with mounts (`imagebuild-run-PID-...` in /dev/shm or the temporary directory: the
  secrets it was given) of an imagebuild process that is gone, SIGKILL leaving no chance to remove it.
Mounts `imagebuild mount` made have no owner on purpose and are never leftovers while their daemon lives.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import tempfile
import time
from dataclasses import dataclass

from imagebuild import mountinfo
from imagebuild.sandbox import PRIVATE_PREFIX, ROOTFS_NAME, ROOTFS_PREFIX, private_base
from unionfs import (
    Daemon,
    MountError,
    UnionMount,
    UnmountError,
    daemons,
    exited,
    is_dead,
    mounted_points,
    owner_gone,
    processes,
    reap,
    unmount,
)

OLD_DIR_AGE = 600.0  # an unnamed (older version's) empty rootfs dir this old in seconds is no one's


@dataclass(frozen=True)
class Leftover:
    """One thing left behind: `problem` is check's line, the rest what `clear_leftover` acts on."""

    problem: str
    mountpoint: str | None = None
    pid: int | None = None
    directory: str | None = None
    tree: str | None = None  # a directory removed with all it holds


def find_leftovers(root: str) -> list[Leftover]:
    """The leftovers of the store at `root` (and the dead rootfs mounts and dirs of any store)."""
    root = os.path.realpath(root)
    mounts = union_mounts()
    found: list[Leftover] = []
    served: set[str] = set()
    store_busy: bool | None = None
    for daemon in daemons():
        served.add(daemon.mountpoint)
        if not daemon.serving or not _of_store(daemon, root):
            continue
        if daemon.owner_fd is not None:
            gone = owner_gone(daemon)
        elif not _imagebuild_point(daemon.mountpoint, root):
            continue  # `imagebuild mount`'s: the user unmounts it
        elif (maker := rootfs_maker(daemon.mountpoint)) is not None:
            gone = exited(maker)
        else:
            if store_busy is None:
                store_busy = store_in_use(root)
            gone = not store_busy
        if not gone:
            continue
        point = daemon.mountpoint
        if point in mounts:
            problem = f"a rootfs of an interrupted build or run is still mounted at {point} (daemon {daemon.pid})"
        else:
            problem = f"the daemon (pid {daemon.pid}) of an interrupted build or run still serves {point}"
        found.append(Leftover(problem, point, daemon.pid, _rootfs_home(point)))
    for point in sorted(mounts - served):
        if _imagebuild_point(point, root) and is_dead(point):
            problem = f"a rootfs of an interrupted build or run is still mounted at {point} (its daemon is gone)"
            found.append(Leftover(problem, point, None, _rootfs_home(point)))
    listed = {leftover.directory for leftover in found}
    for path in stale_rootfs_dirs(mounted_points()):
        if path not in listed:
            problem = f"the rootfs mount point of an interrupted build or run is left at {path}"
            found.append(Leftover(problem, directory=path))
    for path in stale_private_dirs():
        problem = f"the private files (secrets, name files) of an interrupted RUN or run are left at {path}"
        found.append(Leftover(problem, tree=path))
    return found


def stale_private_dirs() -> list[str]:
    """This user's RUN private dirs (runmounts: `imagebuild-run-PID-XXXX`) whose imagebuild process is gone."""
    found = []
    for base in sorted({os.path.realpath(private_base()), os.path.realpath(tempfile.gettempdir())}):
        try:
            names = sorted(os.listdir(base))
        except OSError:
            continue
        for name in names:
            pid, dash, _ = name[len(PRIVATE_PREFIX) :].partition("-")
            if not name.startswith(PRIVATE_PREFIX) or not dash or not pid.isdigit():
                continue
            path = os.path.join(base, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and exited(int(pid)):
                found.append(path)
    return found


def clear_leftover(leftover: Leftover) -> str | None:
    """Unmount, stop the daemon (through its clean path, SIGTERM, then SIGKILL if it will not go), remove the
    rootfs dir. Returns why it could not, or None."""
    error = None
    point, pid = leftover.mountpoint, leftover.pid
    if point is not None and point in union_mounts():
        mount = UnionMount(point, ["/"])
        mount.pid = pid
        try:
            mount.unmount()
        except MountError as exc:
            error = str(exc)
    elif pid is not None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        reap(pid)
    if point is not None and point in union_mounts():
        try:
            unmount(point, lazy=True)
        except UnmountError as exc:
            error = error or str(exc)
    if leftover.tree is not None:
        shutil.rmtree(leftover.tree, ignore_errors=True)
        if os.path.lexists(leftover.tree):
            error = error or f"cannot remove {leftover.tree}: remove it by hand"
    if leftover.directory is not None:
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(leftover.directory, ROOTFS_NAME))
        try:
            os.rmdir(leftover.directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            error = error or f"cannot remove {leftover.directory}: {exc.strerror or exc}"
    return error


def union_mounts() -> set[str]:
    """The unionfs mount points this process sees."""
    points = {point for point, fstype in mountinfo.mounts() if fstype == mountinfo.UNION_FSTYPE}
    return points


def rootfs_maker(path: str) -> int | None:
    """The pid in a rootfs dir's name (`imagebuild-rootfs-PID-XXXXXXXX`, or its `rootfs` mount point), None for
    another name."""
    name = os.path.basename(path)
    if name == ROOTFS_NAME:
        name = os.path.basename(os.path.dirname(path))
    if not name.startswith(ROOTFS_PREFIX):
        return None
    pid, dash, _ = name[len(ROOTFS_PREFIX) :].partition("-")
    return int(pid) if dash and pid.isdigit() else None


def stale_rootfs_dirs(mounted: set[str]) -> list[str]:
    """Our empty rootfs dirs in the temporary directory, none of the `mounted` points, whose maker is gone (for
    older, unnamed ones: made OLD_DIR_AGE ago)."""
    tmp = os.path.realpath(tempfile.gettempdir())
    found = []
    for name in sorted(os.listdir(tmp)):
        path = os.path.join(tmp, name)
        inner = os.path.join(path, ROOTFS_NAME)
        if not name.startswith(ROOTFS_PREFIX) or path in mounted or inner in mounted:
            continue
        try:
            st = os.lstat(path)
            if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.geteuid():
                continue
            listed = os.listdir(path)
            if listed and (listed != [ROOTFS_NAME] or os.path.islink(inner) or os.listdir(inner)):
                continue
        except OSError:
            continue
        maker = rootfs_maker(path)
        if (maker is not None and exited(maker)) or (maker is None and time.time() - st.st_mtime > OLD_DIR_AGE):
            found.append(path)
    return found


def store_in_use(root: str) -> bool:
    """Whether an `imagebuild build` or `run` of the store at `root` (other than this process) is alive; one whose
    store cannot be read counts."""
    for pid, argv in processes():
        rest = _imagebuild_args(argv)
        if rest is None:
            continue
        given = None
        while rest and rest[0].startswith("--root"):
            given = rest[0].partition("=")[2] if "=" in rest[0] else (rest[1] if len(rest) > 1 else None)
            rest = rest[1:] if "=" in rest[0] else rest[2:]
        if not rest or rest[0] not in ("build", "run"):
            continue
        its = _store_of(str(pid), given)
        if its is None or its == root:
            return True
    return False


def _imagebuild_args(argv: list[str]) -> list[str] | None:
    """The arguments of an imagebuild command line (`python -m imagebuild ...`, `imagebuild ...`), or None."""
    if argv[1:3] == ["-m", "imagebuild"]:
        return argv[3:]
    for i in (0, 1):
        if len(argv) > i and os.path.basename(argv[i]) == "imagebuild":
            return argv[i + 1 :]
    return None


def _store_of(pid: str, given: str | None) -> str | None:
    """The store a process uses: its --root, else its $IMAGEBUILD_ROOT or default; None when unreadable."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        if given is not None:
            return os.path.realpath(os.path.join(cwd, given))
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(
                (os.fsdecode(k), os.fsdecode(v)) for k, _, v in (e.partition(b"=") for e in f.read().split(b"\0"))
            )
    except OSError:
        return None
    if env.get("IMAGEBUILD_ROOT"):
        return os.path.realpath(os.path.join(cwd, env["IMAGEBUILD_ROOT"]))
    base = env.get("XDG_DATA_HOME") or (os.path.join(env["HOME"], ".local", "share") if env.get("HOME") else None)
    return None if base is None else os.path.realpath(os.path.join(cwd, base, "imagebuild"))


def _of_store(daemon: Daemon, root: str) -> bool:
    return any(d == root or d.startswith(root + "/") for d in daemon.dirs)


def _rootfs_home(point: str) -> str | None:
    """The rootfs dir in the temporary directory that `point` is (older versions) or is the mount point in, or
    None for another mount point."""
    home = os.path.dirname(point) if os.path.basename(point) == ROOTFS_NAME else point
    tmp = os.path.realpath(tempfile.gettempdir())
    return home if os.path.dirname(home) == tmp and os.path.basename(home).startswith(ROOTFS_PREFIX) else None


def _imagebuild_point(point: str, root: str) -> bool:
    """A mount point builds and runs use: a rootfs dir, or a dir in the store's tmp/ (COPY --from)."""
    return _rootfs_home(point) is not None or point.startswith(os.path.join(root, "tmp") + "/")
