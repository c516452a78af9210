"""One COPY or ADD: its sources found, its destination placed by docker's rules, its layer written.

What is copied gets `--chmod` (or keeps its mode) and `--chown`'s owner; without `--chown` it is root's, except
what comes `--from` another stage or image, which keeps its owner (as docker and buildah do). Directories the
copy makes on the way are 0755 and root's (or `--chown`'s); the image's directories keep their metadata.
ADD extracts a local tar archive into the destination directory, `--chown` applying to what it extracts.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from imagebuild.builder.copydest import CopyError, Destination, Node, Source, directories, place, target
from imagebuild.builder.copyflags import parse_chmod, parse_chown, uses_names
from imagebuild.builder.copylayer import LayerWriter, Meta
from imagebuild.builder.copysource import Match, find, walk
from imagebuild.builder.rootview import FileTree, read_text
from imagebuild.layer import LayerError, extract_layer_tar

HEREDOC_MODE = 0o644


@dataclass(frozen=True)
class CopyRequest:
    cmd: str  # COPY or ADD
    sources: list[str]  # as written, variables expanded
    dest: str
    workdir: str
    chown: str | None = None
    chmod: str | None = None
    heredocs: dict[str, bytes] = field(default_factory=dict)  # COPY <<NAME: the file NAME with this content
    keep_owner: bool = False  # sources from another stage or image keep their owner without --chown


@dataclass(frozen=True)
class SourceSide:
    """Where the sources are: the tree, its name in errors, and what .dockerignore excludes there."""

    tree: FileTree
    what: str
    excluded: Callable[[str], bool] = lambda _rel: False


def run(request: CopyRequest, image: FileTree, side: SourceSide, layer: str) -> None:
    """Write the step's layer into the empty directory `layer`; a CopyError says what the step got wrong."""
    mode = parse_chmod(request.chmod) if request.chmod is not None else None
    owner = owner_of(request.chown, image)
    writer = LayerWriter(layer)
    if request.heredocs:
        sources = [Source(name) for name in request.heredocs]
        destination = place(request.dest, request.workdir, sources, image, request.cmd)
        writer.prepare(directories(destination, image), owner or (0, 0))
        for source, body in zip(sources, request.heredocs.values(), strict=True):
            meta = Meta(HEREDOC_MODE if mode is None else mode, *(owner or (0, 0)))
            writer.text(target(destination, source), body, meta)
    else:
        matches = find(request.sources, side.tree, side.what, side.excluded)
        unpack = request.cmd == "ADD"
        items = [(m, Source(m.name, m.is_dir, unpack and _is_archive(side.tree, m))) for m in matches]
        destination = place(request.dest, request.workdir, [s for _, s in items], image, request.cmd)
        writer.prepare(directories(destination, image), owner or (0, 0))
        for match, source in items:
            _copy_one(writer, side.tree, match, source, destination, mode, owner, request.keep_owner)
    writer.finish()


def owner_of(chown: str | None, image: FileTree) -> tuple[int, int] | None:
    if chown is None:
        return None
    if not uses_names(chown):
        return parse_chown(chown, None, None)
    return parse_chown(chown, read_text(image, "/etc/passwd"), read_text(image, "/etc/group"))


def _meta(node: Node, mode: int | None, owner: tuple[int, int] | None, keep_owner: bool) -> Meta:
    uid, gid = owner if owner is not None else (node.uid, node.gid) if keep_owner else (0, 0)
    return Meta(stat.S_IMODE(node.mode) if mode is None else mode, uid, gid, node.mtime_ns)


def _copy_one(
    writer: LayerWriter,
    tree: FileTree,
    match: Match,
    source: Source,
    destination: Destination,
    mode: int | None,
    owner: tuple[int, int] | None,
    keep_owner: bool,
) -> None:
    out = target(destination, source)
    if source.unpack:
        _extract(writer, tree, match, out, owner)
    elif match.is_dir:
        for rel, node in walk(tree, match.path):
            path, copied = posixpath.join(match.path, rel), posixpath.join(out, rel)
            _copy_entry(writer, tree, path, copied, node, mode, owner, keep_owner)
    else:
        _copy_entry(writer, tree, match.path, out, match.node, mode, owner, keep_owner)


def _copy_entry(
    writer: LayerWriter,
    tree: FileTree,
    path: str,
    out: str,
    node: Node,
    mode: int | None,
    owner: tuple[int, int] | None,
    keep_owner: bool,
) -> None:
    meta = _meta(node, mode, owner, keep_owner)
    if node.is_dir:
        writer.directory(out, meta)
    elif node.is_link:
        writer.symlink(out, node.target, (meta.uid, meta.gid), node.mtime_ns)
    elif stat.S_ISREG(node.mode):
        fd = tree.open(path)
        try:
            writer.file(out, fd, meta)
        finally:
            os.close(fd)
    else:
        raise CopyError(f"{path}: a device, fifo or socket cannot be copied")


def _is_archive(tree: FileTree, match: Match) -> bool:
    if not stat.S_ISREG(match.node.mode):
        return False
    with os.fdopen(tree.open(match.path), "rb") as f:
        try:
            return tarfile.is_tarfile(f)
        except OSError:
            return False


def _extract(writer: LayerWriter, tree: FileTree, match: Match, out: str, owner: tuple[int, int] | None) -> None:
    parent = os.path.dirname(writer.layer.rstrip("/"))
    tmp = tempfile.mkdtemp(prefix="add-", dir=parent)
    try:
        with os.fdopen(tree.open(match.path), "rb") as f:
            extract_layer_tar(f, tmp, whiteout_form="file", rootless=writer.rootless)
        for name in sorted(os.listdir(tmp)):
            path = posixpath.join(out, name)
            disk = writer.disk(path)
            if os.path.isdir(disk) and not os.path.islink(disk):
                shutil.rmtree(disk)
            elif os.path.lexists(disk):
                os.unlink(disk)
            os.rename(os.path.join(tmp, name), disk)
            if owner is not None:
                writer.own(path, owner)
    except LayerError as exc:
        raise CopyError(f"ADD {match.name}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
