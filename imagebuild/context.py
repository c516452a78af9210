"""The build context: walked once, filtered by .dockerignore, hashed by content for the build cache.

.dockerignore follows docker: patterns are relative to the context root (a leading / or ./ is dropped),
`*` and `?` stay within one path component, `**` spans any number of them, a pattern also excludes everything
below a directory it matches, `!` re-includes, and the last matching pattern wins. An excluded Dockerfile or
.dockerignore is still read for the build, but COPY and ADD never take it (as docker does).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

import xxhash

from imagebuild.errors import BuildError

LARGE_CONTEXT = 100 * 1024 * 1024


def _component(text: str) -> str:
    """One path component's glob as a regex: `*` and `?` never cross a `/`."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = text.find("]", i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = text[i + 1 : end].replace("\\", "\\\\")
                out.append("[^/]" if not body else f"[{'^' + body[1:] if body[0] == '!' else body}]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def glob_regex(pattern: str, *, below: bool) -> re.Pattern[str]:
    """A path glob as a regex; `**` spans components; with `below`, paths under a match match too."""
    parts: list[str] = []
    for component in pattern.split("/"):
        parts.append("(?:[^/]+/)*" if component == "**" else _component(component) + "/")
    regex = "".join(parts)
    regex = regex[:-1] if regex.endswith("/") else regex.removesuffix("(?:[^/]+/)*") + "(?:[^/]+(?:/[^/]+)*)?"
    return re.compile(f"^{regex}{'(?:/.*)?' if below else ''}$", re.DOTALL)


@dataclass
class DockerIgnore:
    rules: list[tuple[bool, re.Pattern[str]]] = field(default_factory=list)  # (exclude?, pattern)

    @classmethod
    def parse(cls, text: str) -> DockerIgnore:
        rules = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclude = not line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            pattern = pattern.removeprefix("./")
            if pattern in ("", "."):
                continue
            rules.append((exclude, glob_regex(pattern, below=True)))
        return cls(rules)

    def excluded(self, rel: str) -> bool:
        result = False
        for exclude, regex in self.rules:
            if regex.match(rel):
                result = exclude
        return result


@dataclass
class Entry:
    rel: str
    st: os.stat_result
    digest: str  # xxhash of the content (files), the target (symlinks), "" for directories


@dataclass
class Context:
    root: str
    entries: dict[str, Entry]
    ignore: DockerIgnore

    @property
    def size(self) -> int:
        return sum(e.st.st_size for e in self.entries.values() if stat.S_ISREG(e.st.st_mode))

    def below(self, rel: str) -> list[str]:
        """The entry `rel` and everything under it ("" is the context's root: every entry)."""
        if not rel:
            return sorted(self.entries)
        prefix = rel + "/"
        return sorted(e for e in self.entries if e == rel or e.startswith(prefix))

    def content_hash(self, rels: list[str]) -> tuple[str, dict[str, str]]:
        """A key for the sources' names, types, modes and contents (never their mtimes), and per-file digests."""
        files: dict[str, str] = {}
        for rel in rels:
            for name in self.below(rel):
                e = self.entries[name]
                files[name] = f"{stat.S_IFMT(e.st.st_mode):o}:{stat.S_IMODE(e.st.st_mode):o}:{e.digest}"
        h = xxhash.xxh3_128()
        for name in sorted(files):
            h.update(name.encode("utf-8", "surrogateescape") + b"\0" + files[name].encode() + b"\0")
        return h.hexdigest(), files


def _hash_file(fd: int) -> str:
    h = xxhash.xxh3_128()
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
    return h.hexdigest()


def load(root: str) -> Context:
    if not os.path.isdir(root):
        raise BuildError(f"build context '{root}' is not a directory: give the directory to build from")
    ignore_path = os.path.join(root, ".dockerignore")
    ignore = DockerIgnore()
    if os.path.exists(ignore_path):
        with open(ignore_path, encoding="utf-8", errors="surrogateescape") as f:
            ignore = DockerIgnore.parse(f.read())
    entries: dict[str, Entry] = {}

    def walk(dirfd: int, prefix: str) -> None:
        for name in sorted(os.listdir(dirfd)):
            rel = f"{prefix}{name}"
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            if ignore.excluded(rel):
                if not is_dir:
                    continue
                # an excluded directory may still hold re-included entries ("!dir/keep")
                if not any(not exclude for exclude, _ in ignore.rules):
                    continue
            if is_dir:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dirfd)
                try:
                    if not ignore.excluded(rel):
                        entries[rel] = Entry(rel, st, "")
                    walk(child, rel + "/")
                finally:
                    os.close(child)
            elif stat.S_ISREG(st.st_mode):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dirfd)
                try:
                    entries[rel] = Entry(rel, st, _hash_file(fd))
                finally:
                    os.close(fd)
            elif stat.S_ISLNK(st.st_mode):
                entries[rel] = Entry(rel, st, xxhash.xxh3_128_hexdigest(os.fsencode(os.readlink(name, dir_fd=dirfd))))

    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        walk(root_fd, "")
    finally:
        os.close(root_fd)
    return Context(os.path.realpath(root), entries, ignore)
