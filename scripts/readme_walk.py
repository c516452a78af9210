"""Run the README's command blocks as a user would type them: in order, in one shell, from the checkout.

Every fenced block marked `sh` runs, except lines that call the project's own make targets (`make demo`,
`make test`, `make fuzz`, ...): those are the install and the test suite, which `make check-fresh` and CI run
themselves. Each command must exit 0; the first that does not is named with its README line. Afterwards
nothing the walk started may still be mounted or running.

Usage: python3 scripts/readme_walk.py [--readme README.md] [--cwd DIR] [--login]
  --cwd DIR   where the commands run (default: the README's directory)
  --login     run them in a new login shell (bash -l), as a newcomer's fresh terminal does
Exit status 0 when every command exited 0 and nothing was left behind; 1 otherwise, with one line saying why.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\s*$")
MAKE = re.compile(r"(\w+=\S*\s+)*make(\s|$)")  # `make X`, also after variable assignments


@dataclass(frozen=True)
class Command:
    line: int  # 1-based line of the README where the command starts
    text: str  # the command, continuation lines included


def commands(readme: str) -> list[Command]:
    """The commands of every `sh` block, in order, without the project's own make targets."""
    found: list[Command] = []
    language: str | None = None
    pending: list[str] = []
    start = 0
    for number, line in enumerate(readme.splitlines(), 1):
        fence = FENCE.match(line)
        if fence:
            language = None if language is not None else fence.group(1)
            continue
        if language != "sh":
            continue
        if not pending:
            start = number
        pending.append(line)
        if line.endswith("\\"):
            continue
        text = "\n".join(pending)
        pending = []
        stripped = text.strip()
        if stripped and not stripped.startswith("#") and not MAKE.match(stripped):
            found.append(Command(start, text))
    return found


def script(items: list[Command], readme: str) -> str:
    """A bash script that runs the commands and names the first one that fails."""
    lines = [
        "set -o pipefail",
        # a server a block started in the background is stopped on any exit; nothing there counts as a failure
        "trap 'trap - ERR; kill $(jobs -p) 2>/dev/null || true' EXIT",
        f"trap 'echo \"readme walk: {readme}:$at: exited $?: $cmd\" >&2; exit 1' ERR",
    ]
    for item in items:
        first = item.text.splitlines()[0].strip()
        lines.append(f"at={item.line}; cmd={shlex.quote(first)}")
        lines.append(item.text)
        # a failure inside `a && b` does not trip the trap: check the status of the whole line too
        lines.append('status=$?; [ "$status" = 0 ] || { (exit "$status"); }')
    return "\n".join(lines) + "\n"


def state(uid: int, places: tuple[str, ...]) -> set[str]:
    """The user's FUSE mounts and the unionfs and registry daemons it runs, in the places the walk uses (its
    home, imagebuild's scratch mount points): not another program's. A scratch mount point is named after the
    imagebuild process that made it (`imagebuild-rootfs-PID-...`): while that process lives, it is its own."""
    found = set()
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        for entry in info:
            fields = entry.split()
            kind = fields[fields.index("-") + 1]
            if (
                kind.startswith("fuse")
                and f"user_id={uid}" in entry
                and fields[4].startswith(places)
                and not made_by_a_live_build(fields[4])
            ):
                found.add(f"mounted: {fields[4]}")
    for pid in daemons(uid):
        text = cmdline(pid)
        if any(place in text for place in places) and not made_by_a_live_build(text):
            found.add(f"running: pid {pid} ({text})")
    return found


def made_by_a_live_build(text: str) -> bool:
    """`text` names an imagebuild scratch mount point whose maker still runs (another build, not the walk's)."""
    maker = re.search(r"imagebuild-rootfs-(\d+)-", text)
    if maker is None:
        return False
    try:
        state = Path(f"/proc/{maker.group(1)}/stat").read_text(errors="replace").rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def daemons(uid: int) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != str(os.getpid()):
            try:
                owner = os.stat(f"/proc/{entry}").st_uid
            except OSError:
                continue
            text = cmdline(int(entry))
            if owner == uid and ("unionfs" in text or "docker-registry" in text):
                pids.add(int(entry))
    return pids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--readme", default=str(Path(__file__).resolve().parents[1] / "README.md"))
    parser.add_argument("--cwd")
    parser.add_argument("--login", action="store_true")
    args = parser.parse_args()
    readme = Path(args.readme)
    items = commands(readme.read_text(encoding="utf-8"))
    cwd = args.cwd or str(readme.parent)
    places = (os.path.expanduser("~"), os.path.join(tempfile.gettempdir(), "imagebuild-rootfs-"))
    before = state(os.getuid(), places)
    started = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(script(items, readme.name))
    try:
        shell = ["bash", "-l", f.name] if args.login else ["bash", f.name]
        done = subprocess.run(shell, cwd=cwd, stdin=subprocess.DEVNULL, check=False)
    finally:
        os.unlink(f.name)
    time.sleep(1)  # a daemon told to unmount exits right after it
    left = sorted(state(os.getuid(), places) - before)
    if done.returncode != 0:
        print(f"readme walk: failed after {time.monotonic() - started:.0f}s (the line above names the command)")
        return 1
    if left:
        print(f"readme walk: every command exited 0, but the walk left {'; '.join(left)}")
        return 1
    print(f"readme walk: {len(items)} commands exited 0 in {time.monotonic() - started:.0f}s; nothing left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main())
