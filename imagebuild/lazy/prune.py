"""What `imagebuild prune` removes of `STORE/lazy`, and what `imagebuild check` finds wrong there.

A skeleton or a layer pulled whole (`layers/HEX`, with its TOC `tocs/HEX.json`) and a mount spec (`specs/*.json`)
are in use while a lazy mount's daemon runs with them (its command line names them). Prune removes everything
else (an image in the store has its layers in STORE/layers, which a lazy mount of it uses instead; a new lazy
mount makes its skeletons again from the TOCs, a few KB each), and the temporary files of interrupted work unless
a lazy mount is running (one may be its fetch under way).
Fetched files (`files/`) stay up to the cache's limit (cache.py), which prune applies anew.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil

from imagebuild.layer.estargz import TOC_NAME
from imagebuild.lazy.cache import TEMP_PREFIX, FileCache, lazy_leftovers


def in_use(root: str) -> tuple[set[str], set[str]]:
    """The spec files (`specs/NAME`) and layer directories (`layers/NAME`) under `root` that a running daemon
    was started with: its command line names them."""
    pattern = re.compile(re.escape(root.rstrip("/")) + r"/(specs|layers)/([0-9a-f]{64}(?:\.json)?)")
    specs: set[str] = set()
    layers: set[str] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        for kind, name in pattern.findall(cmdline):
            (specs if kind == "specs" else layers).add(name)
    return specs, layers


def _spec_layers(path: str) -> set[str]:
    try:
        with open(path, "rb") as f:
            return {d.removeprefix("sha256:") for d in json.load(f)["layers"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def prune(root: str, cache_limit: int) -> tuple[int, int, int]:
    """Remove the layer directories, TOCs and specs no running lazy mount uses, leftovers of interrupted work when
    none runs, and the least recently used fetched files beyond `cache_limit` bytes (a limit lowered since they
    were fetched); returns (layer directories removed, other files removed, bytes of fetched files freed)."""
    if not os.path.isdir(root):
        return 0, 0, 0
    live, keep = in_use(root)
    running = bool(live or keep)
    for name in live:
        keep |= _spec_layers(os.path.join(root, "specs", name))
    skeletons = files = 0
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(os.path.join(root, "specs")):
            if name not in live and TEMP_PREFIX not in name:
                os.unlink(os.path.join(root, "specs", name))
                files += 1
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(os.path.join(root, "layers")):
            if name not in keep and ".extract-" not in name:
                shutil.rmtree(os.path.join(root, "layers", name), ignore_errors=True)
                skeletons += not os.path.lexists(os.path.join(root, "layers", name))
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(os.path.join(root, "tocs")):
            if name.removesuffix(".json") not in keep and TEMP_PREFIX not in name:
                os.unlink(os.path.join(root, "tocs", name))
                files += 1
    if not running:
        for path in lazy_leftovers(root):
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)
            files += 1
    freed = 0
    if os.path.isdir(os.path.join(root, "files")):
        freed = sum(size for _, size in FileCache(os.path.join(root, "files"), cache_limit).evict())
    return skeletons, files, freed


def problems(root: str, repair: bool = False) -> list[str]:
    """What is inconsistent in `root` (its leftovers aside, which check names itself): a cached file whose data
    does not match the sha256 it is named by, a skeleton without its TOC, a spec naming a missing layer. With
    `repair`, each goes (a skeleton or spec only when no running mount uses it; a later lazy mount makes it anew)."""
    found: list[str] = []
    live, used = in_use(root)
    fix = " (removed)" if repair else ""
    files = os.path.join(root, "files")
    with contextlib.suppress(FileNotFoundError), os.scandir(files) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if len(entry.name) != 64 or not entry.is_file(follow_symlinks=False):
                continue  # (gzip members m-*: checked as part of their blob by the pull that uses them)
            digest = hashlib.sha256()
            with open(entry.path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            if digest.hexdigest() != entry.name:
                found.append(f"lazy cache file {entry.path}: its data does not match its name{fix}")
                if repair:
                    os.unlink(entry.path)
    layers = os.path.join(root, "layers")
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(layers)):
            marker = os.path.join(layers, name, TOC_NAME)
            if os.path.lexists(marker) and not os.path.exists(os.path.join(root, "tocs", name + ".json")):
                gone = repair and name not in used
                found.append(f"lazy skeleton {os.path.join(layers, name)}: its TOC is missing{fix if gone else ''}")
                if gone:
                    shutil.rmtree(os.path.join(layers, name), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(os.path.join(root, "specs"))):
            path = os.path.join(root, "specs", name)
            missing = sorted(d for d in _spec_layers(path) if not os.path.isdir(os.path.join(layers, d)))
            if missing:
                gone = repair and name not in live
                found.append(f"lazy mount spec {path}: its layer {missing[0]} is missing{fix if gone else ''}")
                if gone:
                    os.unlink(path)
    return found
