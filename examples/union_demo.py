"""Three layers, one union mount: lookups fall through, deletions leave whiteouts, writes copy up."""

from __future__ import annotations

import os
import subprocess
import tempfile

from unionfs.api import mounted


def show(title: str, root: str) -> None:
    print(f"--- {title}")
    subprocess.run(["ls", "-lAR", "--time-style=+", root], check=True)


with tempfile.TemporaryDirectory() as base:
    paths = {name: os.path.join(base, name) for name in ("base", "app", "upper", "work", "rootfs")}
    for path in paths.values():
        os.mkdir(path)
    os.makedirs(os.path.join(paths["base"], "etc"))
    with open(os.path.join(paths["base"], "etc", "motd"), "w") as f:
        f.write("welcome to the base layer\n")
    os.makedirs(os.path.join(paths["app"], "app"))
    with open(os.path.join(paths["app"], "app", "app.py"), "w") as f:
        f.write("print('hello from the app layer')\n")
    with mounted(paths["rootfs"], [paths["app"], paths["base"]], paths["upper"], paths["work"]) as m:
        show("the merged view of two read-only layers", m.mountpoint)
        with open(os.path.join(m.mountpoint, "etc", "motd"), "a") as f:
            f.write("changed in the container layer\n")
        os.unlink(os.path.join(m.mountpoint, "app", "app.py"))
        print("--- /etc/motd after an append (copied up):")
        with open(os.path.join(m.mountpoint, "etc", "motd")) as f:
            print(f.read(), end="")
    show("the upper layer: the copied-up file and a whiteout for the deleted one", paths["upper"])
    show("the lower layers are untouched", paths["app"])
