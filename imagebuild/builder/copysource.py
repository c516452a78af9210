"""What a COPY or ADD source names, by docker's rules, in the build context or in another stage's rootfs.

- A source is relative to the context's root (a leading `/` changes nothing) or, with `--from`, to the stage's
  root; a path that leaves it is an error.
- Wildcards follow Go's filepath.Match, one path component at a time: `*` (any run of characters but `/`,
  a leading `.` included), `?`, `[...]` and `[^...]` classes with ranges, `\\` escaping the next character.
- A glob that matches nothing is allowed when another source matches something (the `COPY a optional* ./`
  idiom); nothing matched at all is an error.
- A source that is a symlink is followed (inside its tree, never on the host); the copy takes the name the
  source was matched by. Symlinks inside a copied directory are copied as symlinks.
- From the build context, only what .dockerignore lets through is seen.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from imagebuild.builder.copydest import CopyError, Node, resolve
from imagebuild.builder.rootview import FileTree, RootView
from imagebuild.context import Context

MAGIC = "*?[\\"


class ContextTree:
    """The build context as a tree: only the entries .dockerignore lets through (and the directories that
    lead to an entry re-included below an excluded one, as docker sends them)."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self._disk = RootView(context.root)
        self._index: dict[str, list[str]] = {}
        for rel in sorted(context.entries):
            while rel:
                parent, _, name = rel.rpartition("/")
                names = self._index.setdefault(parent, [])
                if names and names[-1] == name:
                    break
                names.append(name)
                if parent in context.entries:
                    break
                rel = parent
        for names in self._index.values():
            names.sort()

    def node(self, path: str) -> Node | None:
        rel = path.strip("/")
        entry = self.context.entries.get(rel)
        if entry is None:
            return self._disk.node(path) if not rel or rel in self._index else None
        st = entry.st
        target = ""
        if stat.S_ISLNK(st.st_mode):
            on_disk = self._disk.node(path)
            target = on_disk.target if on_disk is not None else ""
        return Node(st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, target)

    def children(self, path: str) -> list[str]:
        return list(self._index.get(path.strip("/"), []))

    def open(self, path: str, flags: int = os.O_RDONLY) -> int:
        return self._disk.open(path, flags)


def has_magic(pattern: str) -> bool:
    return any(ch in pattern for ch in MAGIC)


def _escaped(pattern: str, i: int) -> tuple[str, int]:
    """The character at i (after a backslash, the one it escapes) and the index after it."""
    if pattern[i] == "\\":
        if i + 1 >= len(pattern):
            raise CopyError(f"bad pattern '{pattern}': it ends with a backslash")
        return pattern[i + 1], i + 2
    return pattern[i], i + 1


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    """The regex of the class opening at pattern[i] == '[', and the index after its ']'."""
    i += 1
    negate = i < len(pattern) and pattern[i] == "^"
    i += negate
    items: list[str] = []
    while True:
        if i >= len(pattern):
            raise CopyError(f"bad pattern '{pattern}': a '[' is not closed")
        if pattern[i] == "]" and items:
            return f"[{'^' if negate else ''}{''.join(items)}]", i + 1
        if pattern[i] in "-]":
            raise CopyError(f"bad pattern '{pattern}': '{pattern[i]}' needs a backslash in a class")
        lo, i = _escaped(pattern, i)
        if i + 1 < len(pattern) and pattern[i] == "-" and pattern[i + 1] != "]":
            hi, i = _escaped(pattern, i + 1)
            items.append(f"{re.escape(lo)}-{re.escape(hi)}")
        else:
            items.append(re.escape(lo))


def component_regex(pattern: str) -> re.Pattern[str]:
    """One path component of a Go filepath.Match pattern as a regex."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[":
            regex, i = _char_class(pattern, i)
            out.append(regex)
        else:
            literal, i = _escaped(pattern, i)
            out.append(re.escape(literal))
    return re.compile("".join(out), re.DOTALL)


def expand(pattern: str, tree: FileTree) -> list[str]:
    """The paths (relative to the tree's root) a relative glob matches, sorted; symlinks on the way not followed."""
    paths = [""]
    for component in pattern.split("/"):
        found: list[str] = []
        for base in paths:
            here = tree.node("/" + base)
            if here is None or not here.is_dir:
                continue
            if has_magic(component):
                regex = component_regex(component)
                found += [posixpath.join(base, n) for n in tree.children("/" + base) if regex.fullmatch(n)]
            elif tree.node("/" + posixpath.join(base, component)) is not None:
                found.append(posixpath.join(base, component))
        paths = found
    return sorted(paths)


@dataclass(frozen=True)
class Match:
    """One source item: where it is (symlinks followed), the name it is copied as, and what it is."""

    path: str  # absolute in its tree
    name: str
    node: Node

    @property
    def is_dir(self) -> bool:
        return self.node.is_dir


def relative(source: str, what: str) -> str:
    """A source as a clean path relative to its tree's root ("" for the root itself)."""
    rel = posixpath.normpath(source).lstrip("/")
    if rel == ".." or rel.startswith("../"):
        raise CopyError(f"COPY source '{source}' is outside {what}: copy it into {what} first")
    return "" if rel == "." else rel


def find(
    sources: list[str], tree: FileTree, what: str, excluded: Callable[[str], bool] = lambda _rel: False
) -> list[Match]:
    """Every item the sources name in `tree` (`what` names the tree in errors: "the build context")."""
    found: list[Match] = []
    unmatched: list[str] = []
    for source in sources:
        rel = relative(source, what)
        if has_magic(rel):
            paths = expand(rel, tree)
            if not paths:
                unmatched.append(source)
        else:
            paths = [rel]
        for path in paths:
            resolved = resolve("/" + path, tree)
            if resolved.node is None:
                if path != rel or tree.node("/" + path) is not None:
                    raise CopyError(f"COPY source '{path}' is a symlink to nothing in {what}")
                hint = " (it is excluded by .dockerignore)" if excluded(rel) else ""
                raise CopyError(f"COPY source '{source}' not found in {what}{hint}")
            found.append(Match(resolved.path, posixpath.basename(path), resolved.node))
    if not found and unmatched:
        raise CopyError(f"COPY source '{unmatched[0]}' matches nothing in {what}")
    return found


def walk(tree: FileTree, top: str) -> Iterator[tuple[str, Node]]:
    """Everything below a directory (relative paths, parents first, sorted), symlinks not followed."""
    for name in tree.children(top):
        path = posixpath.join(top, name)
        node = tree.node(path)
        if node is None:
            continue
        yield name, node
        if node.is_dir:
            for rel, child in walk(tree, path):
                yield posixpath.join(name, rel), child
