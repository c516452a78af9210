"""COPY and ADD destinations, owners and modes: one Dockerfile built by imagebuild and by buildah, rootfs compared.

buildah (`bud --layers --isolation chroot`, as root, in its own throwaway storage) is the oracle. Both builds
start from the same busybox base made from Debian's busybox-static. The two root filesystems are compared entry by
entry: path, type, owner, mode, symlink target and content hash (never mtimes). What buildah's RUN leaves in its
image is listed in BUILDAH_ONLY with the reason: left out of the comparison, and never in imagebuild's image.
Where buildah does what docker does not, DOCKER_NOT_BUILDAH says so, and the test checks both sides of it.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.image.conftest import Tool, dockerfile
from tests.support import buildah_limits

BASE = "copy-oracle-base"
IMAGE = "copy-oracle"

DOCKERFILE = f"""\
FROM {BASE} AS build
RUN mkdir -p /out/sub && echo one > /out/o1.bin && echo two > /out/o2.bin && echo s > /out/sub/s \\
 && ln -s o1.bin /out/olink && chown 1234:5678 /out/o2.bin /out/sub
FROM {BASE}
RUN mkdir -p /tmp /opt/existing/sub /real /etc \\
 && chmod 0750 /opt/existing && chmod 0700 /opt/existing/sub \\
 && ln -s /real /link && ln -s real /rlink \\
 && echo 'app:x:1000:100::/home/app:/bin/sh' > /etc/passwd && echo 'staff:x:50:' > /etc/group
WORKDIR /app
# a relative destination is relative to WORKDIR; `.` is the directory itself
COPY f.txt .
# an existing directory without a trailing slash: the file goes into it
COPY f.txt /tmp
# `/.` names a directory (docker); buildah makes a file, see DOCKER_NOT_BUILDAH
COPY f.txt /opt/newdir/.
# a directory's contents, not the directory; the existing 0750 directory keeps its mode
COPY dir/ /opt/existing/
# several sources, into a directory that ends in /
COPY f.txt g.txt /multi/
# a glob matching several (and a hidden file: * matches a leading dot, as Go's filepath.Match does)
COPY *.log /logs/
# --chown: the copy and every directory it creates
COPY --chown=1000:1000 f.txt /owned/new/
# --chmod: what is copied, directories inside included; the destination directory the copy makes is 0755
COPY --chmod=0640 dir /chmodded
# --chown by name, through the image's /etc/passwd (the user's primary group) and /etc/group
COPY --chown=app f.txt /named/user.txt
COPY --chown=app:staff g.txt /named/
# destinations through symlinked directories of the image: absolute and relative targets, resolved in the image
COPY f.txt /link/
COPY g.txt /rlink/g2.txt
# a source that is a symlink is followed; symlinks inside a copied directory stay symlinks
COPY toplink /tl
# modes of the sources are kept
COPY run.sh notes.md /x/
ADD bundle.tar /unpacked/
# --from a stage: a glob, a directory, a symlink (followed); --from an image. Owners there are kept.
COPY --from=build /out/*.bin /fromglob/
COPY --from=build /out /fromdir
COPY --from=build /out/olink /fromlink
COPY --from={BASE} /bin/busybox /fromimage/
# a WORKDIR that does not exist yet is made by the copy, with its parents
WORKDIR /srv/www
COPY g.txt ./
COPY f.txt copied.txt
COPY dir sub
# the whole context (what .dockerignore lets through), subdirectories kept
COPY . /whole/
# a file over a file of an earlier layer (buildah differs, see DOCKER_NOT_BUILDAH)
COPY g.txt /tmp/f.txt
"""

# Things buildah's RUN leaves in the image (its chroot isolation makes them) that are no part of a COPY.
BUILDAH_ONLY = {
    "etc/hosts": "buildah's RUN writes /etc/hosts into the rootfs",
    "etc/hostname": "buildah's RUN writes /etc/hostname into the rootfs",
    "etc/resolv.conf": "buildah's RUN writes /etc/resolv.conf into the rootfs",
    "run": "buildah's RUN makes /run",
    "dev": "buildah's RUN makes /dev (imagebuild drops its empty sandbox mountpoints)",
    "proc": "buildah's RUN makes /proc (imagebuild drops its empty sandbox mountpoints)",
    "sys": "buildah's RUN makes /sys",
}

# Where buildah 1.28 departs from docker, imagebuild follows docker; each is checked on both sides below.
DOCKER_NOT_BUILDAH = {
    "opt/newdir": "docker: a destination ending in /. is a directory, so the file is /opt/newdir/f.txt; "
    "buildah 1.28 cleans the path to /opt/newdir first and writes the file there",
    "opt/newdir/f.txt": "(the file inside /opt/newdir, which buildah does not make)",
    "tmp/f.txt": "docker: a COPY onto an existing file replaces it (g.txt's data); "
    "buildah 1.28 leaves the existing file as it was (f.txt's data)",
}

Entry = tuple[object, ...]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe(root: Path) -> dict[str, Entry]:
    """Every entry below root, symlinks not followed: type, uid, gid, mode, symlink target, content hash."""
    found: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            digest = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = sha256(f.read())
            mode = oct(stat.S_IMODE(st.st_mode))
            found[os.path.relpath(path, root)] = (kind, st.st_uid, st.st_gid, mode, target, digest)
    return found


def make_context(ctx: Path) -> None:
    (ctx / "f.txt").write_text("f\n")
    (ctx / "g.txt").write_text("g\n")
    (ctx / "h1.log").write_text("h1\n")
    (ctx / "h2.log").write_text("h2\n")
    (ctx / ".hidden.log").write_text("hidden\n")
    (ctx / "notes.md").write_text("notes\n")
    (ctx / "run.sh").write_text("#!/bin/sh\necho run\n")
    (ctx / "run.sh").chmod(0o755)
    (ctx / "dir" / "sub").mkdir(parents=True)
    (ctx / "dir" / "a.txt").write_text("a\n")
    (ctx / "dir" / "sub" / "s.txt").write_text("s\n")
    (ctx / "dir" / "alink").symlink_to("a.txt")
    (ctx / "toplink").symlink_to("f.txt")
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, payload in (("pkg/inside.txt", b"from the tar\n"), ("top.txt", b"top\n")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(payload))
    (ctx / "bundle.tar").write_bytes(data.getvalue())
    (ctx / "base").mkdir()
    shutil.copy(Path(__file__).resolve().parents[2] / "examples" / "busybox" / "Dockerfile", ctx / "base")
    shutil.copy(os.path.realpath(shutil.which("busybox") or "/bin/busybox"), ctx / "base" / "busybox")
    (ctx / ".dockerignore").write_text("base\n")
    dockerfile(ctx, DOCKERFILE)


class Buildah:
    """buildah with its own storage under a temporary directory, removed whole afterwards."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.args = ["buildah", "--root", str(top / "root"), "--runroot", str(top / "runroot")]
        self.args += ["--storage-driver", "vfs"]

    def __call__(self, *args: str) -> str:
        done = subprocess.run([*self.args, *args], capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise AssertionError(f"buildah {args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def build(self, context: Path, tag: str) -> None:
        self("bud", "--pull=never", "--layers", "--isolation", "chroot", *buildah_limits(), "-t", tag, str(context))

    @staticmethod
    def _leftover_mounts(top: Path) -> list[str]:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            return [line.split()[1] for line in f if line.split()[1].startswith(str(top))]

    def clean(self) -> None:
        subprocess.run([*self.args, "rm", "--all"], capture_output=True, check=False)
        subprocess.run([*self.args, "rmi", "--all", "--force"], capture_output=True, check=False)
        for point in self._leftover_mounts(self.top):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture
def buildah(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Buildah]:
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (apt-get install buildah): it is the oracle here")
    if os.geteuid() != 0:
        pytest.skip("the buildah oracle runs as root (its chroot isolation needs it)")
    tool = Buildah(tmp_path_factory.mktemp("buildah"))
    try:
        yield tool
    finally:
        tool.clean()


def buildah_rootfs(buildah: Buildah, image: str) -> dict[str, Entry]:
    container = buildah("from", "--pull-never", image).strip()
    try:
        root = Path(buildah("mount", container).strip())
        try:
            return describe(root)
        finally:
            buildah("umount", container)
    finally:
        buildah("rm", container)


def test_copy_destinations_owners_and_modes_match_buildah(
    tool: Tool, ctx: Path, mounted_image: Any, buildah: Buildah
) -> None:
    make_context(ctx)
    tool.build(ctx / "base", "-t", BASE)
    tool.build(ctx, "-t", IMAGE)
    root = mounted_image(IMAGE)
    ours = describe(root)
    assert "bin/busybox" in ours, "the imagebuild image's rootfs reads as empty"
    buildah.build(ctx / "base", BASE)
    buildah.build(ctx, IMAGE)
    theirs = buildah_rootfs(buildah, IMAGE)

    for path in BUILDAH_ONLY:
        theirs.pop(path, None)
        assert path not in ours, f"/{path}: imagebuild should not have it ({BUILDAH_ONLY[path]})"
    f_data, g_data = sha256(b"f\n"), sha256(b"g\n")
    assert ours.pop("opt/newdir")[0] == stat.S_IFDIR and ours.pop("opt/newdir/f.txt")[5] == f_data
    assert theirs.pop("opt/newdir")[0] == stat.S_IFREG and "opt/newdir/f.txt" not in theirs
    assert ours.pop("tmp/f.txt")[5] == g_data and theirs.pop("tmp/f.txt")[5] == f_data
    differences = {
        path: {"imagebuild": ours.get(path), "buildah": theirs.get(path)}
        for path in sorted(set(ours) | set(theirs))
        if ours.get(path) != theirs.get(path)
    }
    assert differences == {}

    # The cases the Dockerfile exercises, spelled out: the comparison above says buildah agrees.
    assert (root / "app" / "f.txt").read_text() == "f\n"
    assert (root / "tmp").is_dir() and (root / "tmp" / "f.txt").read_text() == "g\n"
    assert stat.S_IMODE(os.stat(root / "opt" / "existing").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(root / "opt" / "existing" / "sub").st_mode) == 0o755  # copied: its metadata
    assert sorted(os.listdir(root / "logs")) == [".hidden.log", "h1.log", "h2.log"]
    owned = os.stat(root / "owned")
    assert (owned.st_uid, owned.st_gid, stat.S_IMODE(owned.st_mode)) == (1000, 1000, 0o755)
    chmodded = os.stat(root / "chmodded" / "sub")
    assert stat.S_IMODE(chmodded.st_mode) == 0o640
    assert os.stat(root / "named" / "user.txt").st_gid == 100 and os.stat(root / "named" / "g.txt").st_gid == 50
    assert sorted(os.listdir(root / "real")) == ["f.txt", "g2.txt"] and os.path.islink(root / "link")
    assert (root / "tl").is_file() and not (root / "tl").is_symlink()
    assert os.readlink(root / "chmodded" / "alink") == "a.txt"
    assert sorted(os.listdir(root / "srv" / "www")) == ["copied.txt", "g.txt", "sub"]
    assert os.stat(root / "fromglob" / "o2.bin").st_uid == 1234 and os.stat(root / "fromdir" / "sub").st_gid == 5678


def test_several_sources_need_a_directory(tool: Tool, ctx: Path) -> None:
    """docker's error, where buildah would make the directory: imagebuild follows docker."""
    (ctx / "f.txt").write_text("f\n")
    (ctx / "g.txt").write_text("g\n")
    for line in ("COPY f.txt g.txt /nodir", "COPY *.txt /nodir"):
        dockerfile(ctx, f"FROM busybox\n{line}\n")
        failed = tool.build(ctx, check=False)
        assert failed.returncode == 1
        assert (
            "Dockerfile:2: When using COPY with more than one source file, the destination must be a directory "
            "and end with a /" in failed.stderr
        )
    dockerfile(ctx, "FROM busybox\nRUN mkdir /exists\nCOPY f.txt g.txt /exists\n")
    tool.build(ctx)  # an existing directory is one
