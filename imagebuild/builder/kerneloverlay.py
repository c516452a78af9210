"""A root RUN step on the kernel's overlayfs, as buildah runs it, where the kernel allows it (ARCHITECTURE §7).

The mount is made in a mount namespace of its own, held by a process (`unshare ... cat`) that lives while the
mount is open or until this process is gone (it waits for the end of its stdin, a pipe only we write to). No
other process of the host sees the mount, and nothing can outlive the build: when the holder goes (closed, or
the build killed outright), the namespace goes, and the kernel unmounts the overlay with it. The builder reaches
the rootfs through `/proc/PID/root` of the holder, and the RUN's command enters the namespace with nsenter.

The upper is what unionfs would have written as root: whiteouts are character devices 0/0 and opaque directories
carry `trusted.overlay.opaque`, the forms every layer of a root store uses. Redirects, metacopy and the index are
off, so every file in the upper is whole and no entry points elsewhere: rename(2) of a directory from a lower layer
fails with EXDEV, and `mv` copies it instead, as on docker's overlay2. What the kernel adds for itself (the
`trusted.overlay.origin` of a copied-up file, `impure` on its directory) is taken out before the upper becomes a
layer.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import threading
from collections.abc import Sequence

from imagebuild import mountinfo
from imagebuild.errors import ImagebuildError
from imagebuild.userns import release
from unionfs import TRUSTED_OPAQUE, WH_PREFIX, is_internal_xattr

READY_WITHIN = 30.0  # seconds for `unshare` and `mount` to answer
OPTIONS = "redirect_dir=off,metacopy=off,index=off,volatile"  # volatile: the upper is synced once, when captured
PAGE = 4096  # the kernel reads mount options from one page
SPECIAL = (":", ",", "\\", "\n")  # characters lowerdir= would need escaped: such a store uses unionfs
# The holder mounts, says so on stdout, then waits for its stdin to close.
SCRIPT = 'mount -t overlay overlay -o "$1" -- "$2" || exit 3; echo ready; exec cat >/dev/null'


class Refused(ImagebuildError):
    """Kernel overlayfs cannot mount these layers here; the message says why, in a few words (the builder then
    uses unionfs, or under `--run-fs overlay` fails with it)."""


@functools.cache
def refusal() -> str | None:
    """Why RUN steps cannot use kernel overlayfs on this machine at all (not root, no overlay in the kernel)."""
    if os.geteuid() != 0:
        return "it needs root"
    try:
        with open("/proc/filesystems", encoding="utf-8") as f:
            known = {line.split()[-1] for line in f if line.strip()}
    except OSError:
        known = set()
    if "overlay" not in known and not os.path.isdir("/sys/module/overlay"):
        # mount(8) loads the module itself when the kernel has it as one
        try:
            loaded = subprocess.run(["modprobe", "-q", "overlay"], capture_output=True, check=False).returncode == 0
        except OSError:  # no modprobe: no module to load
            loaded = False
        if not loaded:
            return "this kernel has no overlay filesystem"
    return None


def option_string(lowers: Sequence[str], upper: str, work: str) -> tuple[str, str]:
    """The overlay's options and the directory they are relative to: paths relative to the directory all of them
    share (a store's), so that more layers fit in the kernel's page."""
    paths = [*lowers, upper, work]
    base = os.path.commonpath([os.path.abspath(p) for p in paths])
    rel = [os.path.relpath(os.path.abspath(p), base) for p in paths]
    bad = [p for p in rel if any(c in p for c in SPECIAL)]
    if bad:
        raise Refused(f"the path {os.path.join(base, bad[0])!r} has a character overlayfs options cannot carry")
    text = f"lowerdir={':'.join(rel[:-2])},upperdir={rel[-2]},workdir={rel[-1]},{OPTIONS}"
    if len(text) >= PAGE:
        raise Refused(f"{len(lowers)} layers are more than one mount's options can name")
    return text, base


class KernelMount:
    """An overlay of `lowers` (top first) with `upper` and `work`, at `mountpoint` in a namespace of its own."""

    def __init__(self, mountpoint: str, lowers: Sequence[str], upper: str, work: str) -> None:
        self.mountpoint = mountpoint
        self.lowers = list(lowers)
        self.upper = upper
        self.work = work
        self.holder: subprocess.Popen[bytes] | None = None

    @property
    def path(self) -> str:
        """The mounted rootfs as the builder reaches it from the host's namespace."""
        assert self.holder is not None
        return f"/proc/{self.holder.pid}/root{self.mountpoint}"

    def enter(self) -> list[str]:
        """A command prefix that runs a command in the mount's namespace."""
        assert self.holder is not None
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "--"]

    def io_errors(self) -> list[str]:
        return []  # the kernel's own filesystem: an error reaches the step's command, never only a log

    def mount(self, keep: Sequence[str] = ()) -> KernelMount:
        """Mount; `keep`: the unionfs mounts the step binds (RUN --mount from a stage), which stay in the
        namespace where every other unionfs mount is detached (see `_detach_unionfs`)."""
        text, base = option_string(self.lowers, self.upper, self.work)
        try:
            # slave: the host's unmounts reach the namespace's copies of its mounts (another RUN's unionfs mount
            # would otherwise stay in use here until this step ends), and nothing of the namespace reaches the host
            holder = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", SCRIPT, "sh", text, self.mountpoint],
                cwd=base,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise Refused(f"unshare cannot be started: {exc.strerror}") from None
        self.holder = holder
        assert holder.stdout is not None
        timer = threading.Timer(READY_WITHIN, holder.kill)
        timer.start()
        try:
            line = holder.stdout.readline()
        finally:
            timer.cancel()
        if line.strip() != b"ready":
            holder.kill()
            holder.wait()
            error = holder.stderr.read().decode(errors="replace").strip() if holder.stderr else ""
            release(holder, 0)
            self.holder = None
            raise Refused(reason(error, holder.returncode, self.upper))
        self._detach_unionfs(keep)
        return self

    def _detach_unionfs(self, keep: Sequence[str]) -> None:
        """Detach, in the namespace only, the unionfs mounts it copied from the host that the step does not use
        (other builds' and containers' rootfs). Where the host's mounts do not propagate (a private `/`), the copy
        would keep such a mount's FUSE connection open after the host unmounts it, and its daemon, waiting for
        the kernel to end it, would not exit before this step ends."""
        assert self.holder is not None
        try:
            copied = [point for point, fstype in mountinfo.mounts(self.holder.pid) if fstype == mountinfo.UNION_FSTYPE]
        except OSError:
            return
        # never one the store is on (a build inside a container of ours): the step's caches and files live there
        store = os.path.realpath(self.upper)
        others = [p for p in copied if p not in keep and not store.startswith(p.rstrip("/") + "/")]
        if others:
            subprocess.run([*self.enter(), "umount", "--lazy", "--", *others], capture_output=True, check=False)

    def unmount(self) -> None:
        """Let the holder go: its namespace, and the mount with it, are gone when this returns."""
        holder, self.holder = self.holder, None
        if holder is not None:
            release(holder, 10)


def reason(error: str, status: int | None, upper: str) -> str:
    """mount(8)'s complaint in a few words, with the filesystem the upper is on (the usual cause: one that
    overlayfs cannot write an upper to, such as another overlay)."""
    lines = [line for line in error.splitlines() if line.strip() and not line.startswith("dmesg")]
    said = lines[0] if lines else f"the mount failed (status {status})"
    said = said.split(": ", 2)[-1] if said.startswith("mount: ") else said  # "mount: POINT: why"
    fstype = filesystem_of(upper)
    return f"{said}; the store is on {fstype}" if fstype else said


def filesystem_of(path: str) -> str | None:
    """The type of the filesystem `path` is on (the mount with the longest mount point above it)."""
    target = os.path.realpath(path)
    best, fstype = "", None
    try:
        for point, kind in mountinfo.mounts():
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, fstype = point, kind
    except (OSError, ValueError, IndexError):
        return None
    return fstype


def strip_bookkeeping(upper: str) -> list[str]:
    """Take out what the kernel keeps for itself in an upper (origin, impure) and the union records and markers
    it let the step's commands set (unionfs refuses them), keeping the kernel's own opaque marker: the layer then
    holds what unionfs would have written. Returns the entries named as whiteouts (`.wh.NAME`) that the step
    made, which unionfs refuses and a layer would read as whiteouts: the kernel never makes one itself."""
    keep = {TRUSTED_OPAQUE}
    reserved = []
    for top, dirs, files in os.walk(upper):
        reserved += [os.path.join(top, n)[len(upper) :] for n in (*dirs, *files) if n.startswith(WH_PREFIX)]
        for name in (".", *dirs, *files):
            path = top if name == "." else os.path.join(top, name)
            try:
                names = os.listxattr(path, follow_symlinks=False)
            except OSError:
                continue
            for attr in names:
                if is_internal_xattr(attr) and attr not in keep:
                    with contextlib.suppress(OSError):
                        os.removexattr(path, attr, follow_symlinks=False)
    return sorted(reserved)
