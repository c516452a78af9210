"""Where COPY and ADD put what they copy: docker's destination rules, decided against the image below. Pure.

- A relative destination is relative to WORKDIR; the path is cleaned (`..` never leaves `/`).
- Symlinks on the way are the image's: resolved inside the image (an absolute target starts again at the
  image's root), never on the host. A link as the last component is followed too.
- The destination is a directory to copy into when it ends in `/`, is `.` or ends in `/.`, or already is a
  directory in the image. A directory source, or an archive ADD extracts, always goes into a directory: its
  contents, not the directory itself. Otherwise a single source is written at the destination path.
- Several sources (or a glob matching several) need a directory: one that exists, or a destination that
  says it is one; otherwise it is docker's error.
- Directories on the way to the destination that the image already has keep their mode, owner and times; those
  the copy creates are 0755, owned by root or by `--chown`'s owner.
"""

from __future__ import annotations

import posixpath
import stat
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from imagebuild.errors import ImagebuildError

MAX_LINKS = 40  # as Linux: more symlinks than this while resolving one path is a loop


class CopyError(ImagebuildError):
    """A COPY or ADD the image or the sources do not allow; the message says why (the caller adds where)."""


@dataclass(frozen=True)
class Node:
    """What an image (or a build context) has at a path: enough to resolve paths and keep metadata."""

    mode: int  # file type and permission bits
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    target: str = ""  # a symlink's target

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)


class TreeView(Protocol):
    """Read access to a tree by absolute path, `/` being its root; `node` is given only paths whose every
    parent is a real directory (the resolver follows symlinks itself)."""

    def node(self, path: str) -> Node | None: ...


@dataclass(frozen=True)
class Resolved:
    path: str  # absolute, every symlink of the tree followed
    node: Node | None  # what is there (None: nothing yet)


def absolute(dest: str, workdir: str) -> str:
    """The destination as a clean absolute path: relative to WORKDIR, `..` stopping at `/`."""
    joined = posixpath.normpath(posixpath.join("/", workdir or "/", dest))
    return "/" + joined.lstrip("/")


def names_directory(dest: str) -> bool:
    """Whether the destination as written says it is a directory: a trailing `/`, or `.`, or a trailing `/.`."""
    return dest.endswith("/") or dest == "." or dest.endswith("/.")


def resolve(path: str, tree: TreeView) -> Resolved:
    """Follow the tree's symlinks along an absolute path, as the kernel would with the tree as its root."""
    parts = deque(p for p in path.split("/") if p)
    done: list[str] = []
    links = 0
    missing_from: int | None = None  # done[missing_from:] does not exist: nothing there to look up
    while parts:
        part = parts.popleft()
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            if missing_from is not None and len(done) <= missing_from:
                missing_from = None
            continue
        here = "/" + "/".join([*done, part])
        found = None if missing_from is not None else tree.node(here)
        if found is not None and found.is_link:
            links += 1
            if links > MAX_LINKS:
                raise CopyError(f"{path}: too many levels of symbolic links")
            if found.target.startswith("/"):
                done = []
            parts.extendleft(reversed([p for p in found.target.split("/") if p]))
            continue
        if found is not None and not found.is_dir and parts:
            raise CopyError(f"{here} is not a directory in the image, so {path} cannot be reached")
        if found is None and missing_from is None:
            missing_from = len(done)
        done.append(part)
    final = "/" + "/".join(done)
    return Resolved(final, None if missing_from is not None else tree.node(final))


@dataclass(frozen=True)
class Source:
    """One thing to copy, as the destination rules need to know it."""

    name: str  # the name it gets inside a destination directory
    is_dir: bool = False
    unpack: bool = False  # an archive ADD extracts into the destination directory


@dataclass(frozen=True)
class Destination:
    path: str  # absolute, resolved in the image
    into: bool  # True: a directory the sources go into; False: the path the single file source becomes


def place(dest: str, workdir: str, sources: list[Source], image: TreeView, cmd: str = "COPY") -> Destination:
    """Where the sources go, by docker's rules; a CopyError when the image or the sources forbid it."""
    resolved = resolve(absolute(dest, workdir), image)
    is_dir = names_directory(dest) or (resolved.node is not None and resolved.node.is_dir)
    if len(sources) > 1 and not is_dir:
        raise CopyError(
            f"When using {cmd} with more than one source file, the destination must be a directory and end with a /"
        )
    into = is_dir or any(s.is_dir or s.unpack for s in sources)
    if into and resolved.node is not None and not resolved.node.is_dir:
        raise CopyError(f"{dest}: {resolved.path} exists in the image and is not a directory")
    return Destination(resolved.path, into)


def target(destination: Destination, source: Source) -> str:
    """Where a source lands: a file at `dir/NAME` or at the path itself; a directory's contents in the dir."""
    if source.is_dir or source.unpack or not destination.into:
        return destination.path
    return posixpath.join(destination.path, source.name)


@dataclass(frozen=True)
class Directory:
    path: str  # absolute, in the image
    node: Node | None  # the image's directory there, whose metadata the layer keeps; None: the copy makes it


def directories(destination: Destination, image: TreeView) -> list[Directory]:
    """The directories the layer needs on the way to (and, copying into it, at) the destination, top first."""
    top = destination.path if destination.into else posixpath.dirname(destination.path)
    found: list[Directory] = []
    missing = False
    parts = [p for p in top.split("/") if p]
    for i in range(len(parts)):
        path = "/" + "/".join(parts[: i + 1])
        node = None if missing else image.node(path)
        if node is not None and not node.is_dir:
            raise CopyError(f"{path} is not a directory in the image")
        missing = node is None
        found.append(Directory(path, node))
    return found
