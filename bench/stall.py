"""How long other requests wait while a slow copy runs: unionfs against fuse-overlayfs, in the same run.

python bench/stall.py [--size-mib N] [--files N] [--runs N]

Three slow copies, each on a fresh mount with caches dropped: a copy-up of a large lower file (an append), the
data fill of a `metacopy=on` file (chmod, then an append), and the rename of a merged directory holding the
large file and many small ones. Meanwhile another thread stats uncached files in another directory every 20
ms. Reported: the copy's time and the slowest of those stats, medians over the runs. A filesystem that
refuses a case (fuse-overlayfs answers EXDEV to the directory rename, for `mv` to copy) says so. Needs root.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

from run import CACHE, drop_caches, mounted

CASES = ("copy-up", "metacopy fill", "directory rename")
FILESYSTEMS = ("unionfs", "fuse-overlayfs")
PROBES = 40


def layers(size_mib: int, files: int) -> list[Path]:
    """Two lower layers (top first) merging `tree`: a large file and many small ones in one, a file in the
    other; and `other/` with files to stat meanwhile."""
    top, bottom = CACHE / "stall" / f"top-{size_mib}-{files}", CACHE / "stall" / "bottom"
    if not (top / "done").exists():
        (top / "tree" / "sub").mkdir(parents=True, exist_ok=True)
        (top / "other").mkdir(exist_ok=True)
        with open(top / "tree" / "big", "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(size_mib):
                f.write(block)
        for i in range(files):
            (top / "tree" / "sub" / f"f{i}").write_text("x" * 100)
        for i in range(PROBES):
            (top / "other" / f"s{i}").write_text("y")
        (top / "done").touch()
    (bottom / "tree").mkdir(parents=True, exist_ok=True)
    (bottom / "tree" / "below").write_text("z")
    return [top, bottom]


def append(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"x")


def measure(mnt: Path, case: str) -> tuple[float, float] | str:
    """The copy's seconds and the slowest stat elsewhere meanwhile, or why the filesystem refused it."""
    os.stat(mnt / "other")
    os.stat(mnt / "tree")
    if case == "metacopy fill":
        os.chmod(mnt / "tree" / "big", 0o600)  # copies metadata only; the append copies the data
    action: Callable[[], None] = (
        (lambda: os.rename(mnt / "tree", mnt / "moved"))
        if case == "directory rename"
        else (lambda: append(mnt / "tree" / "big"))
    )
    drop_caches()
    os.stat(mnt / "other")  # the directory itself is known; the files in it are not
    failed: list[OSError] = []

    def run() -> None:
        try:
            action()
        except OSError as exc:
            failed.append(exc)

    start = time.perf_counter()
    worker = threading.Thread(target=run)
    worker.start()
    slowest = 0.0
    for i in range(PROBES):
        if not worker.is_alive():
            break
        before = time.perf_counter()
        os.stat(mnt / "other" / f"s{i}")
        slowest = max(slowest, time.perf_counter() - before)
        time.sleep(0.02)
    worker.join()
    if failed:
        return os.strerror(failed[0].errno or 0)
    return time.perf_counter() - start, slowest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lowers = layers(args.size_mib, args.files)
    scratch = CACHE / "stall" / "scratch"
    print("| case | filesystem | copy (s) | slowest stat meanwhile (ms) |\n|---|---|---|---|")
    for case in CASES:
        for kind in FILESYSTEMS:
            results = []
            for _ in range(args.runs):
                with mounted(kind, lowers, scratch, ",metacopy=on" if case == "metacopy fill" else "") as (mnt, _):
                    results.append(measure(mnt, case))
            times = [r for r in results if not isinstance(r, str)]
            if not times:
                print(f"| {case} | {kind} | refused: {results[0]} | |")
                continue
            copy = statistics.median(t for t, _ in times)
            stall = statistics.median(s for _, s in times)
            print(f"| {case} | {kind} | {copy:.2f} | {stall * 1000:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
