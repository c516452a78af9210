"""docker buildx's `-o`/`--output` for a build: where the built image goes besides the store.

  type=local,dest=DIR   the final stage's rootfs written into DIR (missing or empty)
  type=tar,dest=FILE    the rootfs as one tar (`dest=-`: standard output)
  type=oci,dest=FILE    the image as an OCI layout in a tar, as `docker buildx` writes it (`dest=-`: stdout)
  -o DIR                short for type=local,dest=DIR; `-o -` for type=tar,dest=-

The rootfs is the image's layers flattened (imagebuild/layer/flatten.py): what a mount of the image shows.
Owners are the image's ids, as root sees them: in the tar; on disk as root. Rootless with a subordinate range,
DIR is written inside the build's user namespace, so the image's root is the user and its other ids are the
user's subordinate ids, as `podman unshare` shows them; without a range, every file is the user's and each
keeps the image's owner and mode in `user.containers.override_stat`, the record unionfs and fuse-overlayfs read.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from typing import IO, BinaryIO

from imagebuild import userns
from imagebuild.builder import optionfields
from imagebuild.errors import BuildError
from imagebuild.layer import LayerError, extract_layer_tar
from imagebuild.layer.flatten import flatten
from imagebuild.store.images import Image, Store
from imagebuild.transport.layout import export_oci_layout

KINDS = ("local", "tar", "oci")
STDOUT = "-"


@dataclass(frozen=True)
class Output:
    kind: str
    dest: str

    @property
    def to_stdout(self) -> bool:
        return self.dest == STDOUT


def parse(text: str) -> Output:
    """One `-o` value: `type=KIND,dest=PATH`, or the short form PATH (local) or `-` (tar to stdout)."""
    if "=" not in text.split(",", 1)[0]:
        return Output("tar", STDOUT) if text == STDOUT else Output("local", text)
    fields = optionfields.fields(text, "-o", "type=local,dest=DIR")
    kind = fields.pop("type", "")
    if kind not in KINDS:
        raise BuildError(f"-o type={kind or '(none)'} is not supported: use type=local, type=tar or type=oci")
    dest = fields.pop("dest", "")
    if not dest:
        raise BuildError(f"-o '{text}' names no dest: add dest=PATH")
    if kind == "local" and dest == STDOUT:
        raise BuildError("-o type=local,dest=- cannot go to standard output: name a directory, or use type=tar")
    fields.pop("name", None)  # buildx's image name for type=oci: the -t tags name it here
    if fields:
        raise BuildError(f"-o {', '.join(sorted(fields))}: not an option of type={kind} (dest=)")
    return Output(kind, dest)


def check(outputs: list[Output]) -> None:
    """Refuse, before the build, a destination that cannot be written."""
    if sum(1 for o in outputs if o.to_stdout) > 1:
        raise BuildError("-o: only one output can go to standard output")
    for output in outputs:
        if output.to_stdout:
            continue
        if output.kind == "local":
            if os.path.lexists(output.dest) and (not os.path.isdir(output.dest) or os.listdir(output.dest)):
                raise BuildError(f"-o '{output.dest}': not an empty directory: name a new or empty one")
            parent = os.path.dirname(os.path.abspath(output.dest))
        else:
            if os.path.isdir(output.dest):
                raise BuildError(f"-o '{output.dest}' is a directory: type={output.kind} writes a file; name one")
            parent = os.path.dirname(os.path.abspath(output.dest))
        if not os.path.isdir(parent):
            raise BuildError(f"-o '{output.dest}': the directory '{parent}' does not exist: create it first")


def write(store: Store, image: Image, output: Output, names: list[str], stdout: BinaryIO) -> None:
    """Write `image` as `output` says; `stdout` is where `dest=-` goes."""
    try:
        if output.kind == "local":
            _local(store, image, output.dest)
        elif output.to_stdout:
            _stream(store, image, output.kind, names, stdout)
            stdout.flush()
        else:
            tmp = output.dest + ".tmp"
            try:
                with open(tmp, "wb") as f:
                    _stream(store, image, output.kind, names, f)
                os.replace(tmp, output.dest)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    except LayerError as exc:
        raise BuildError(f"-o {output.kind}: {exc}") from None


def _stream(store: Store, image: Image, kind: str, names: list[str], out: IO[bytes]) -> None:
    if kind == "tar":
        rootfs(store, image, out)
    else:
        oci_archive(store, image, names, out)


def rootfs(store: Store, image: Image, out: IO[bytes]) -> None:
    """The image's rootfs as one tar."""
    openers = [functools.partial(store.blobs.open, layer.blob.digest) for layer in image.layers]
    flatten(openers, out, os.path.join(store.root, "tmp"))  # type: ignore[arg-type]


def oci_archive(store: Store, image: Image, names: list[str], out: IO[bytes]) -> None:
    """The image as an OCI layout in a tar (`oci-layout`, `index.json`, `blobs/sha256/...`), named by its first
    tag when it has one, as `docker buildx build -o type=oci` writes it."""
    layout = tempfile.mkdtemp(prefix="oci-output-", dir=os.path.join(store.root, "tmp"))
    try:
        export_oci_layout(store, image, names[0] if names else None, layout)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for dirpath, dirs, files in os.walk(layout):
                dirs.sort()
                for name in sorted(dirs) + sorted(files):
                    path = os.path.join(dirpath, name)
                    # owned by whoever writes it (a reader that is not root cannot chown to anyone else)
                    info = tar.gettarinfo(path, os.path.relpath(path, layout))
                    info.uname = info.gname = ""
                    info.mode = 0o755 if info.isdir() else 0o644
                    if info.isdir():
                        tar.addfile(info)
                    else:
                        with open(path, "rb") as f:
                            tar.addfile(info, f)
    finally:
        shutil.rmtree(layout, ignore_errors=True)


def _local(store: Store, image: Image, dest: str) -> None:
    scratch = tempfile.mkdtemp(prefix="local-output-", dir=os.path.join(store.root, "tmp"))
    try:
        flat = os.path.join(scratch, "rootfs.tar")
        with open(flat, "wb") as f:
            rootfs(store, image, f)
        ranges = userns.ranges()
        if ranges is None:
            with open(flat, "rb") as f:
                extract_layer_tar(f, dest, whiteout_form="file", rootless=os.geteuid() != 0)
            return
        os.chmod(scratch, 0o755)
        namespace = userns.Namespace(*ranges).open()
        try:
            script = (
                "import sys\nfrom imagebuild.layer import extract_layer_tar\n"
                "with open(sys.argv[1], 'rb') as f:\n"
                "    extract_layer_tar(f, sys.argv[2], whiteout_form='file', rootless=False)\n"
            )
            done = subprocess.run(
                [*namespace.enter(), sys.executable, "-c", script, flat, os.path.abspath(dest)],
                capture_output=True,
                text=True,
                cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
            )
        finally:
            namespace.close()
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["failed"])[-1]
            raise BuildError(f"-o type=local: cannot write {dest} in the user namespace: {last}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
