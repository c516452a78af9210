"""Random lower layers: an abstract tree (Hypothesis strategies), written in our forms, in the kernel's forms,
and merged into the plain directory the model starts from.

Names come from a small pool shared with the operations, so operations hit what the layers hold. Symlink
targets are relative and never climb above the layer root from where they are made (an operation may move a
link higher: the mount points sit below private junk directories, so such a link lands in a sandbox).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from hypothesis import strategies as st

from tests.support import to_kernel_form
from unionfs.whiteout import FUSEOVERLAY_OPAQUE, OPAQUE_MARKER, TRUSTED_OPAQUE, USER_OPAQUE

POOL = ("a", "b", "c")
MAX_DEPTH = 3
#: Every layer entry's time: old, so "kept" times (those before the example began) are the explicit ones.
BASE_TIME_NS = 1_000_000_000 * 10**9
CONTENTS = (b"", b"x", b"hello\n", b"0123456789abcdef" * 4, bytes(range(256)) * 20)
FILE_MODES = (0o644, 0o600, 0o755, 0o444, 0o4755, 0o2750)
DIR_MODES = (0o755, 0o700, 0o555)
XATTRS = ((), (("user.k", b"v"),), (("user.k", b"w"), ("user.m", b"")))
OPAQUE_FORMS = ("marker", "trusted", "user", "fuseoverlay")
WHITEOUT_FORMS = ("chardev", "whfile")


@dataclass(frozen=True)
class File:
    data: bytes
    mode: int = 0o644
    xattrs: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Fifo:
    mode: int = 0o644


@dataclass(frozen=True)
class Whiteout:
    form: str  # "chardev" (0/0 device) or "whfile" (OCI .wh.NAME)


@dataclass(frozen=True)
class Dir:
    children: dict[str, Entry] = field(default_factory=dict)
    mode: int = 0o755
    opaque: str | None = None  # one of OPAQUE_FORMS
    xattrs: tuple[tuple[str, bytes], ...] = ()


Entry = File | Symlink | Fifo | Whiteout | Dir


def symlink_targets(depth: int) -> st.SearchStrategy[str]:
    """Relative targets that stay inside the tree from a link `depth` directories below the root."""
    inside = st.lists(st.sampled_from(POOL), min_size=1, max_size=2).map("/".join)
    ups = st.integers(0, depth).map(lambda n: "../" * n)
    return st.one_of(st.tuples(ups, inside).map("".join), st.just("."), st.just("nowhere"))


@st.composite
def dirs(draw: st.DrawFn, depth: int = 0, *, privileged: bool = True) -> Dir:
    names = draw(st.lists(st.sampled_from(POOL), unique=True, max_size=3))
    children: dict[str, Entry] = {}
    for name in names:
        kinds = ["file", "file", "symlink", "whiteout", "fifo"] + (["dir", "dir"] if depth + 1 < MAX_DEPTH else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "file":
            children[name] = File(
                draw(st.sampled_from(CONTENTS)), draw(st.sampled_from(FILE_MODES)), draw(st.sampled_from(XATTRS))
            )
        elif kind == "symlink":
            children[name] = Symlink(draw(symlink_targets(depth)))
        elif kind == "fifo":
            children[name] = Fifo()
        elif kind == "whiteout":
            children[name] = Whiteout(draw(st.sampled_from(WHITEOUT_FORMS)))
        else:
            children[name] = draw(dirs(depth + 1, privileged=privileged))
    forms = [f for f in OPAQUE_FORMS if privileged or f != "trusted"]
    opaque = draw(st.one_of(st.none(), st.none(), st.sampled_from(forms))) if depth > 0 else None
    return Dir(
        children, draw(st.sampled_from(DIR_MODES)) if depth > 0 else 0o755, opaque, draw(st.sampled_from(XATTRS))
    )


def layer_stacks(privileged: bool = True) -> st.SearchStrategy[list[Dir]]:
    """1 to 3 lower layers, top first."""
    return st.lists(dirs(privileged=privileged), min_size=1, max_size=3).map(prune_whiteouts)


def prune_whiteouts(layers: list[Dir]) -> list[Dir]:
    """Drop whiteouts from directories that merge with nothing below: kernel overlayfs lists such a whiteout
    yet cannot stat it (real layers never hold one, as an image tool writes a whiteout only over something)."""
    drop: set[tuple[int, str]] = set()

    def visit(stack: list[tuple[int, Dir]], path: str) -> None:
        if len(stack) == 1:
            index, tree = stack[0]
            for rel in _whiteouts(tree, path):
                drop.add((index, rel))
            return
        names = {n for _, d in stack for n in d.children}
        for name in names:
            found: list[tuple[int, Dir]] = []
            for index, layer in stack:
                entry = layer.children.get(name)
                if entry is None:
                    continue
                if not isinstance(entry, Dir):
                    break
                found.append((index, entry))
                if entry.opaque is not None:
                    break
            if found:
                visit(found, f"{path}/{name}")

    visit(list(enumerate(layers)), "")
    return [_without(layer, "", {p for i, p in drop if i == index}) for index, layer in enumerate(layers)]


def _whiteouts(tree: Dir, path: str) -> list[str]:
    found = []
    for name, entry in tree.children.items():
        if isinstance(entry, Whiteout):
            found.append(f"{path}/{name}")
        elif isinstance(entry, Dir):
            found += _whiteouts(entry, f"{path}/{name}")
    return found


def _without(tree: Dir, path: str, drop: set[str]) -> Dir:
    children: dict[str, Entry] = {}
    for name, entry in tree.children.items():
        here = f"{path}/{name}"
        if here in drop:
            continue
        children[name] = _without(entry, here, drop) if isinstance(entry, Dir) else entry
    return Dir(children, tree.mode, tree.opaque, tree.xattrs)


# -- writing ---------------------------------------------------------------------------------------------------


def set_time(path: str) -> None:
    os.utime(path, ns=(BASE_TIME_NS, BASE_TIME_NS), follow_symlinks=False)


def set_xattrs(path: str, xattrs: tuple[tuple[str, bytes], ...]) -> None:
    for name, value in xattrs:
        os.setxattr(path, name, value, follow_symlinks=False)


def write_layer(root: str, tree: Dir) -> None:
    """`tree` as a layer directory in our (and the OCI) forms."""
    os.makedirs(root, exist_ok=True)
    _write_children(root, tree)


def _write_children(path: str, tree: Dir) -> None:
    for name, entry in tree.children.items():
        child = os.path.join(path, name)
        if isinstance(entry, File):
            with open(child, "wb") as f:
                f.write(entry.data)
            os.chmod(child, entry.mode)
            set_xattrs(child, entry.xattrs)
        elif isinstance(entry, Symlink):
            os.symlink(entry.target, child)
        elif isinstance(entry, Fifo):
            os.mkfifo(child, entry.mode)
        elif isinstance(entry, Whiteout):
            if entry.form == "chardev":
                os.mknod(child, stat.S_IFCHR | 0o600, 0)
            else:
                open(os.path.join(path, ".wh." + name), "wb").close()
                set_time(os.path.join(path, ".wh." + name))
                continue
        else:
            os.mkdir(child)
            _write_children(child, entry)
            if entry.opaque == "marker":
                open(os.path.join(child, OPAQUE_MARKER), "wb").close()
            elif entry.opaque is not None:
                xattr = {"trusted": TRUSTED_OPAQUE, "user": USER_OPAQUE, "fuseoverlay": FUSEOVERLAY_OPAQUE}
                os.setxattr(child, xattr[entry.opaque], b"y")
            set_xattrs(child, entry.xattrs)
            os.chmod(child, entry.mode)
        set_time(child)


def write_kernel_layer(root: str, tree: Dir) -> None:
    """`tree` as a layer directory kernel overlayfs reads: 0/0 devices and trusted.overlay.opaque only."""
    write_layer(root, tree)
    to_kernel_form(root)


# -- merging: what a union shows, as a plain tree --------------------------------------------------------------


def merge(layers: list[Dir]) -> Dir:
    """The merged view of `layers` (top first) as one tree without whiteouts or opaque markers."""
    return _merge_dirs(layers)


def _merge_dirs(stack: list[Dir]) -> Dir:
    top = stack[0]
    names: list[str] = []
    for layer in stack:
        names += [n for n in layer.children if n not in names]
    children: dict[str, Entry] = {}
    for name in sorted(names):
        found: list[Dir] = []
        for layer in stack:
            entry = layer.children.get(name)
            if entry is None:
                continue
            if isinstance(entry, Whiteout):
                break
            if not isinstance(entry, Dir):
                if not found:
                    children[name] = entry
                break
            found.append(entry)
            if entry.opaque is not None:
                break
        if found:
            children[name] = _merge_dirs(found)
    return Dir(children, top.mode, None, top.xattrs)
