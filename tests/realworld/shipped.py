"""What an image's layer tars ship, replayed from an OCI layout: the .pyc files whose recorded source mtime is not
their source's any more. Python then recompiles the module at every start (and, as a non-root user, cannot save
the result): the image works, slower, and a build on a machine whose mounts looked right cannot show it."""

from __future__ import annotations

import json
import os
import struct
import tarfile
from pathlib import Path
from typing import NamedTuple


class StalePyc(NamedTuple):
    path: str
    recorded: int  # the source mtime the .pyc records
    source: int  # the source's mtime in the image


def _blob(layout: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algorithm / hexdigest


def _layers(layout: Path) -> list[Path]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]).read_text())
    return [_blob(layout, layer["digest"]) for layer in manifest["layers"]]


def stale_pycs(layout: Path) -> list[StalePyc]:
    """Every `__pycache__/*.pyc` (timestamp form) in the image whose recorded source mtime or size differs from
    its source's, the layers applied in order (whiteouts and opaque markers included)."""
    files: dict[str, tuple[int, int]] = {}  # path -> (mtime, size) of regular files
    pycs: dict[str, tuple[int, int, int]] = {}  # path -> (flags, recorded mtime, recorded size)
    for blob in _layers(layout):
        with tarfile.open(blob, "r:*") as tar:
            for member in tar:
                path = os.path.normpath("/" + member.name)
                directory, name = os.path.split(path)
                gone = ""
                if name == ".wh..wh..opq":
                    gone = directory.rstrip("/") + "/"
                elif name.startswith(".wh."):
                    gone = os.path.join(directory, name[4:])
                if gone:
                    for table in (files, pycs):
                        for key in [k for k in table if k == gone or k.startswith(gone.rstrip("/") + "/")]:
                            del table[key]
                    continue
                files.pop(path, None)
                pycs.pop(path, None)
                if not member.isfile():
                    continue
                files[path] = (int(member.mtime), member.size)
                if name.endswith(".pyc") and os.path.basename(directory) == "__pycache__":
                    data = tar.extractfile(member)
                    head = data.read(16) if data else b""
                    if len(head) == 16:
                        pycs[path] = struct.unpack_from("<III", head, 4)
    stale = []
    for path, (flags, mtime, size) in sorted(pycs.items()):
        directory, name = os.path.split(path)
        source = files.get(os.path.join(os.path.dirname(directory), name.split(".")[0] + ".py"))
        if flags == 0 and source is not None and (mtime, size) != (source[0] & 0xFFFFFFFF, source[1] & 0xFFFFFFFF):
            stale.append(StalePyc(path, mtime, source[0]))
    return stale
