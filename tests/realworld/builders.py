"""The builders compared, the shared Debian base, and the builds' results.

- `buildah`: `buildah bud --layers --isolation chroot` as root, in a private store removed afterwards; the rootfs is
  read through `buildah from` + `buildah mount`.
- `root`: imagebuild as root (its RUN steps on the kernel's overlayfs, the default where it mounts); the rootfs is
  read through `imagebuild mount --read-only`. `root-unionfs`: the same with `--run-fs unionfs`, the path of a
  machine without kernel overlayfs.
- `rootless`: imagebuild as an ordinary user (the one tests/rootless creates, with a subordinate id range); the
  user mounts the image and reads its rootfs itself (only the mounting user may enter a rootless mount).

Each store starts from `debian:bookworm`, built by that builder from the same tarball (`contexts/base`: `FROM
scratch`, `ADD rootfs.tar /`), so all three start from the same files and the base's own ADD is compared too.
That base keeps the host's /etc/resolv.conf and /etc/hostname, which mmdebstrap copies in for its own apt run, so
the other contexts' RUN steps reach the network whatever a builder gives them; `contexts/registry-base` is the
same tree without them, as registries ship debian:bookworm, and checks that a RUN step can still resolve names.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tests.realworld.walk import Entry, entries
from tests.rootless.conftest import User
from tests.support import buildah_limits

HERE = Path(__file__).resolve().parent
CONTEXTS_DIR = HERE / "contexts"
CONTEXTS = ("base", "pyapp", "apt", "users", "multistage", "node", "files", "registry-base")
# Contexts that start FROM scratch; the others start FROM the base.
FROM_SCRATCH = ("base", "registry-base")
# What mmdebstrap copies from the host for its own apt run and leaves behind; an image from a registry has neither.
HOST_FILES = ("./etc/resolv.conf", "./etc/hostname")
BUILDERS = ("buildah", "root", "root-unionfs", "rootless")
AS_ROOT = ("root", "root-unionfs")  # imagebuild as root: RUN steps on kernel overlayfs, and on unionfs
BASE_TAG = "debian:bookworm"
MIRROR = "http://deb.debian.org/debian"
# The base tarball is kept per day (mmdebstrap takes about 20 s): the RUN steps' `apt-get update` reads the same
# mirror on the same day, and older tarballs are removed when a new one is made.
CACHE = Path(os.environ.get("IMAGEBUILD_REALWORLD_CACHE", "/var/cache/imagebuild-realworld"))
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_TIMEOUT = 2400
# Where to keep each build's output and rootfs entries (JSON) for a closer look; nowhere when unset.
DUMP = Path(os.environ["IMAGEBUILD_REALWORLD_DUMP"]) if os.environ.get("IMAGEBUILD_REALWORLD_DUMP") else None


def base_tarball(cache: Path = CACHE) -> Path:
    """Today's minimal Debian 12 tree as a tarball: mmdebstrap's minbase, without /dev (an image has none)."""
    tarball = cache / f"bookworm-{time.strftime('%Y-%m-%d')}.tar"
    if tarball.exists():
        return tarball
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is missing: apt-get install mmdebstrap")
    cache.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial.tar")
    done = subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", "--skip=output/dev", "bookworm", str(partial), MIRROR],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap failed ({done.returncode}):\n{done.stderr[-3000:]}")
    partial.rename(tarball)
    for old in cache.glob("bookworm-*.tar"):
        if old != tarball:
            old.unlink()
    return tarball


def vendor_tar(path: Path) -> None:
    """A vendored library as a tarball, the way projects ship one for ADD: symlinks, a hard link, a private
    directory, files of another owner. Fixed times and owners: the same bytes on every run."""

    def add(tar: tarfile.TarFile, name: str, kind: bytes, mode: int, data: bytes = b"", **extra: object) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime, info.size = kind, mode, 1700000000, len(data)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        for key, value in extra.items():
            setattr(info, key, value)
        tar.addfile(info, io.BytesIO(data) if data else None)

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "vendor", tarfile.DIRTYPE, 0o755)
        add(tar, "vendor/bin", tarfile.DIRTYPE, 0o755)
        add(tar, "vendor/bin/tool", tarfile.REGTYPE, 0o755, b"#!/bin/sh\necho vendored tool\n")
        add(tar, "vendor/bin/tool-alias", tarfile.LNKTYPE, 0o755, linkname="vendor/bin/tool")
        add(tar, "vendor/lib", tarfile.DIRTYPE, 0o755)
        add(tar, "vendor/lib/libfoo.so.1.0", tarfile.REGTYPE, 0o644, b"\x7fELF not really\n")
        add(tar, "vendor/lib/libfoo.so.1", tarfile.SYMTYPE, 0o777, linkname="libfoo.so.1.0")
        add(tar, "vendor/lib/libfoo.so", tarfile.SYMTYPE, 0o777, linkname="libfoo.so.1")
        add(tar, "vendor/private", tarfile.DIRTYPE, 0o700)
        add(tar, "vendor/private/key", tarfile.REGTYPE, 0o600, b"k\n")
        add(tar, "vendor/share", tarfile.DIRTYPE, 0o755, uid=1000, gid=1000, uname="", gname="")
        add(tar, "vendor/share/data.txt", tarfile.REGTYPE, 0o640, b"data\n", uid=1000, gid=1000, uname="", gname="")


def without_host_files(tarball: Path, into: Path) -> None:
    with tarfile.open(tarball) as source, tarfile.open(into, "w", format=tarfile.PAX_FORMAT) as tar:
        for member in source:
            if member.name not in HOST_FILES:
                tar.addfile(member, source.extractfile(member) if member.isfile() else None)


def prepare_context(name: str, into: Path) -> Path:
    """A working copy of a context, with what is not committed: the base tarball, the machine's CA bundle (a
    network that inspects TLS needs it for pip and npm), the vendored tarball."""
    target = into / name
    if target.exists():
        return target
    shutil.copytree(CONTEXTS_DIR / name, target)
    if name == "base":
        tarball = base_tarball()
        try:
            os.link(tarball, target / "rootfs.tar")
        except OSError:
            shutil.copy(tarball, target / "rootfs.tar")
    if name == "registry-base":
        without_host_files(base_tarball(), target / "rootfs.tar")
    if "site-ca.crt" in (CONTEXTS_DIR / name / "Dockerfile").read_text():
        if not CA_BUNDLE.exists():
            raise RuntimeError(f"{CA_BUNDLE} is missing: apt-get install ca-certificates")
        shutil.copy(CA_BUNDLE, target / "site-ca.crt")
    if name == "files":
        vendor_tar(target / "vendor.tar")
    subprocess.run(["chmod", "-R", "a+rX", str(target)], check=True)
    return target


def tag_of(context: str) -> str:
    return BASE_TAG if context == "base" else f"realworld-{context}:latest"


STEP = re.compile(r"^(Step \d+/\d+ :|STEP \d+/\d+:)")
# What a build's output shows when a download failed rather than the build: Debian's mirror, PyPI or npm
# unreachable or flaky (apt, pip and npm's own messages). The harness builds once more after such a failure and
# says so; retries inside a RUN step are the Dockerfile's business.
NETWORK_ERROR = re.compile(
    r"Temporary failure (resolving|in name resolution)|Could not (resolve|connect to)|Failed to fetch|"
    r"Unable to fetch some archives|Hash Sum mismatch|Connection (timed out|refused|reset)|Max retries exceeded|"
    r"ReadTimeoutError|NewConnectionError|RemoteDisconnected|IncompleteRead|npm ERR! network|"
    r"\b(ECONNRESET|ETIMEDOUT|EAI_AGAIN|ECONNREFUSED)\b"
)


def network_error(output: str) -> str | None:
    """The first line of a failed build's output that says a download failed, or None."""
    return next((line.strip() for line in output.splitlines() if NETWORK_ERROR.search(line)), None)


def failing_step(output: str, lines: int = 15) -> str:
    """The step a failed build was at and the build's last lines."""
    text = output.rstrip("\n").splitlines()
    steps = [i for i, line in enumerate(text) if STEP.match(line)]
    tail = text[-lines:]
    if steps and steps[-1] < len(text) - lines:
        tail = [text[steps[-1]], "...", *tail]
    elif steps:
        tail = text[steps[-1] :]
    return "\n".join(tail)


def run_logged(command: list[str], **kwargs: object) -> tuple[bool, str]:
    """Run a build: its status and its interleaved output."""
    try:
        done = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=BUILD_TIMEOUT,
            stdin=subprocess.DEVNULL,
            **kwargs,  # type: ignore[call-overload]
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return False, f"{out}\n(no end after {BUILD_TIMEOUT} s)"
    return done.returncode == 0, done.stdout + ("" if done.returncode == 0 else f"\n(exit status {done.returncode})")


def checked(command: list[str], **kwargs: object) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return str(done.stdout)


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as info:
        points = [line.split(" ")[4].replace("\\040", " ") for line in info]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


def unmount_all_under(path: Path) -> list[str]:
    """Take down whatever is still mounted under path (deepest first); the mounts that were left."""
    left = mounts_under(path)
    for point in sorted(left, key=len, reverse=True):
        if subprocess.run(["fusermount3", "-u", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    return left


def processes_naming(path: Path) -> list[tuple[int, str]]:
    """Processes whose command line names something under path (a unionfs daemon serving a mount there)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            if f"{path}/" in command:
                found.append((int(entry.name), command[:200]))
    return found


class Builder(Protocol):
    name: str

    def build(self, context: Path, tag: str) -> tuple[bool, str]: ...

    def rootfs(self, tag: str) -> dict[str, Entry]: ...

    def export(self, tag: str, layout: Path) -> None: ...

    def config(self, tag: str) -> dict[str, object]:
        """The image's config (Env, Cmd, WorkingDir, ...), in the OCI config's field names."""
        ...

    def close(self) -> list[str]:
        """Clear away what the builder left behind: what that was (nothing, when all went well)."""
        ...


class Buildah:
    name = "buildah"

    def __init__(self, work: Path) -> None:
        self.root = work / "buildah-storage"
        self.runroot = work / "buildah-run"
        self.env = {**os.environ, "BUILDAH_ISOLATION": "chroot"}

    def command(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.root), "--runroot", str(self.runroot), *args]

    def build(self, context: Path, tag: str) -> tuple[bool, str]:
        command = self.command(
            "bud", "--layers", "--isolation", "chroot", "--pull=never", *buildah_limits(), "-t", tag, str(context)
        )
        return run_logged(command, env=self.env)

    def rootfs(self, tag: str) -> dict[str, Entry]:
        container = checked(self.command("from", "--pull=never", "--quiet", tag), env=self.env).strip()
        try:
            path = checked(self.command("mount", container), env=self.env).strip()
            try:
                return entries(path)
            finally:
                checked(self.command("umount", container), env=self.env)
        finally:
            checked(self.command("rm", container), env=self.env)

    def export(self, tag: str, layout: Path) -> None:
        checked(self.command("push", "--quiet", tag, f"oci:{layout}"), env=self.env)

    def config(self, tag: str) -> dict[str, object]:
        inspected = json.loads(checked(self.command("inspect", "--type", "image", tag), env=self.env))
        return dict(inspected["OCIv1"].get("config") or {})

    def close(self) -> list[str]:
        if not self.root.exists():
            return []
        listed = subprocess.run(self.command("containers", "--quiet"), capture_output=True, text=True, env=self.env)
        left = [f"buildah container {c}" for c in listed.stdout.split()]
        subprocess.run(self.command("rm", "--all"), capture_output=True, env=self.env)
        subprocess.run(self.command("rmi", "--all", "--force"), capture_output=True, env=self.env)
        return left + [f"mount {p}" for p in unmount_all_under(self.root) + unmount_all_under(self.runroot)]


class BuildahRootless(Buildah):
    """buildah as the ordinary user, as a rootless user runs it: its user namespace over the user's subordinate
    ids, and the overlay driver through fuse-overlayfs (kernel overlay needs root). For the build benchmark."""

    name = "buildah-rootless"

    def __init__(self, work: Path, user: User) -> None:
        super().__init__(work)
        self.user = user
        self.base = work / "buildah-rootless"
        self.root = self.base / "storage"
        self.runroot = self.base / "run"
        self.base.mkdir()
        os.chown(self.base, user.uid, user.gid)
        self.env = {**user.env(), "BUILDAH_ISOLATION": "chroot", "XDG_RUNTIME_DIR": str(self.runroot)}

    def command(self, *args: str) -> list[str]:
        u = self.user
        return [
            *("setpriv", f"--reuid={u.uid}", f"--regid={u.gid}", "--init-groups", "--inh-caps=-all", "--"),
            *("buildah", "--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver", "overlay"),
            *("--storage-opt", f"overlay.mount_program={shutil.which('fuse-overlayfs') or 'fuse-overlayfs'}", *args),
        ]

    def build(self, context: Path, tag: str) -> tuple[bool, str]:
        command = self.command(
            "bud", "--layers", "--isolation", "chroot", "--pull=never", *buildah_limits(), "-t", tag, str(context)
        )
        return run_logged(command, env=self.env, cwd=self.user.base)


class ImagebuildRoot:
    """imagebuild as root; `run_fs`: what its RUN steps run on (`auto`: the kernel's overlayfs here)."""

    def __init__(self, work: Path, name: str = "root", run_fs: str = "auto") -> None:
        self.name = name
        self.run_fs = run_fs
        self.store = work / f"store-{name}"
        self.mountpoint = work / f"mnt-{name}"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "imagebuild", "--root", str(self.store), *args]

    def build(self, context: Path, tag: str) -> tuple[bool, str]:
        return run_logged(self.command("build", "--run-fs", self.run_fs, "-t", tag, str(context)))

    def rootfs(self, tag: str) -> dict[str, Entry]:
        self.mountpoint.mkdir(exist_ok=True)
        checked(self.command("mount", "--read-only", tag, str(self.mountpoint)))
        try:
            return entries(str(self.mountpoint))
        finally:
            checked(self.command("umount", str(self.mountpoint)))

    def export(self, tag: str, layout: Path) -> None:
        checked(self.command("export", tag, "-o", str(layout)))

    def config(self, tag: str) -> dict[str, object]:
        return dict(json.loads(checked(self.command("inspect", tag)))[0]["Config"] or {})

    def close(self) -> list[str]:
        return [f"mount {p}" for p in unmount_all_under(self.mountpoint)]


class ImagebuildRootless:
    name = "rootless"

    def __init__(self, work: Path, user: User) -> None:
        self.user = user
        self.store = work / "store-rootless"
        self.mountpoint = work / "mnt-rootless"
        for path in (self.store, self.mountpoint):
            path.mkdir()
            os.chown(path, user.uid, user.gid)

    def as_user(self, *args: str) -> list[str]:
        u = self.user
        return ["setpriv", f"--reuid={u.uid}", f"--regid={u.gid}", "--init-groups", "--inh-caps=-all", "--", *args]

    def command(self, *args: str) -> list[str]:
        return self.as_user(self.user.python, "-m", "imagebuild", "--root", str(self.store), *args)

    def build(self, context: Path, tag: str) -> tuple[bool, str]:
        return run_logged(self.command("build", "-t", tag, str(context)), env=self.user.env(), cwd=self.user.base)

    def rootfs(self, tag: str) -> dict[str, Entry]:
        env = self.user.env()
        checked(self.command("mount", "--read-only", tag, str(self.mountpoint)), env=env, cwd=self.user.base)
        try:
            walked = checked(
                self.as_user(self.user.python, "-m", "tests.realworld.walk", str(self.mountpoint)),
                env=env,
                cwd=self.user.base,
            )
        finally:
            checked(self.command("umount", str(self.mountpoint)), env=env, cwd=self.user.base)
        found = {path: Entry(*fields) for path, fields in json.loads(walked).items()}
        return {path: self.as_image(e) for path, e in found.items()}

    def as_image(self, entry: Entry) -> Entry:
        """The mount shows an entry without an ownership record with its owner on disk: the building user. Those
        are symlinks, fifos and sockets (Linux allows no user xattrs on them) and the layers' roots, and the layer
        tar writes them as the image's root (`host_owner` in imagebuild/layer/tar.py): read them so too. (An
        image file really owned by the building user's uid would be misread; none of these images has one.)"""
        uid = 0 if entry.uid == self.user.uid else entry.uid
        gid = 0 if entry.gid == self.user.gid else entry.gid
        return entry._replace(uid=uid, gid=gid)

    def export(self, tag: str, layout: Path) -> None:
        os.chown(layout.parent, self.user.uid, self.user.gid)
        checked(self.command("export", tag, "-o", str(layout)), env=self.user.env(), cwd=self.user.base)

    def config(self, tag: str) -> dict[str, object]:
        inspected = checked(self.command("inspect", tag), env=self.user.env(), cwd=self.user.base)
        return dict(json.loads(inspected)[0]["Config"] or {})

    def close(self) -> list[str]:
        return [f"mount {p}" for p in unmount_all_under(self.mountpoint)]


@dataclass
class Result:
    context: str
    builder: str
    seconds: float = 0.0
    failure: str = ""  # the failing step and the build's last lines; empty when it built
    retried: str = ""  # the network error the first attempt failed on, when the build was run a second time
    entries: dict[str, Entry] = field(default_factory=dict)
    config: dict[str, object] = field(default_factory=dict)

    @property
    def built(self) -> bool:
        return not self.failure


class Lab:
    """Builds each (context, builder) once per session, on demand, and keeps the result."""

    def __init__(self, work: Path, builders: dict[str, Builder]) -> None:
        self.work = work
        self.builders = builders
        self.results: dict[tuple[str, str], Result] = {}
        self.stale_pycs: dict[tuple[str, str], int] = {}  # (context, builder) -> stale .pyc files in its export
        self.contexts = work / "contexts"
        self.contexts.mkdir()

    def result(self, context: str, builder: str) -> Result:
        key = (context, builder)
        if key not in self.results:
            self.results[key] = self._build(context, builder)
        return self.results[key]

    def _build(self, context: str, builder: str) -> Result:
        result = Result(context, builder)
        if context not in FROM_SCRATCH:
            base = self.result("base", builder)
            if not base.built:
                result.failure = f"the base image did not build:\n{base.failure}"
                return result
        directory = prepare_context(context, self.contexts)
        started = time.monotonic()
        ok, output = self.builders[builder].build(directory, tag_of(context))
        result.seconds = time.monotonic() - started
        if not ok and (line := network_error(output)):
            result.retried = line[:200]
            print(f"\n{context} by {builder} failed on a network error, building it again: {line}", file=sys.stderr)
            started = time.monotonic()
            ok, output = self.builders[builder].build(directory, tag_of(context))
            result.seconds = time.monotonic() - started
        if DUMP:
            DUMP.mkdir(parents=True, exist_ok=True)
            (DUMP / f"{context}-{builder}.log").write_text(output)
        if not ok:
            result.failure = failing_step(output)
            if result.retried:
                result.failure += f"\n(built twice: the first attempt failed on a network error: {result.retried})"
            return result
        try:
            result.entries = self.builders[builder].rootfs(tag_of(context))
            result.config = self.builders[builder].config(tag_of(context))
        except (OSError, RuntimeError, subprocess.SubprocessError, ValueError) as e:
            result.failure = f"built, but its rootfs could not be read: {e}"
        if DUMP and result.entries:
            with open(DUMP / f"{context}-{builder}.json", "w") as f:
                json.dump({path: list(e) for path, e in result.entries.items()}, f)
        return result

    def export(self, context: str, builder: str) -> Path:
        """The built image as an OCI layout: what would leave the machine."""
        layout = self.work / f"exports-{builder}" / context
        if not layout.exists():
            layout.parent.mkdir(exist_ok=True)
            self.builders[builder].export(tag_of(context), layout)
        return layout

    def close(self) -> list[str]:
        """Tear everything down: what was left behind (mounts, buildah containers, daemons), which should be
        nothing."""
        left: list[str] = []
        for builder in self.builders.values():
            try:
                left += builder.close()
            except (OSError, subprocess.SubprocessError) as e:
                left.append(f"{builder.name}: {e}")
        left += [f"mount {p}" for p in unmount_all_under(self.work)]
        for pid, command in processes_naming(self.work):
            left.append(f"process {pid}: {command}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # a daemon one of our builds or mounts started
        return left


def open_lab(work: Path, user: User) -> Lab:
    builders: dict[str, Builder] = {
        "buildah": Buildah(work),
        "root": ImagebuildRoot(work),
        "root-unionfs": ImagebuildRoot(work, "root-unionfs", "unionfs"),
        "rootless": ImagebuildRootless(work, user),
    }
    return Lab(work, builders)
