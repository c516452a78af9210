"""Benchmark: unionfs against fuse-overlayfs and kernel overlayfs, on the same layers, in the same run.

python bench/run.py [--quick] [--runs N] [--filesystems unionfs,fuse-overlayfs,overlay] [--workloads a,b]
                    [--settle SECONDS] [--markdown OUT] [--json OUT]

The corpus is generated here (seeded, no downloads): a rootfs-like tree in three layers, a git checkout, a copy
of the stdlib's pure-Python modules, and a large file. Each workload runs on a fresh mount (fresh upper), cold
(caches dropped) and warm; outputs are compared across filesystems; the median of the runs (at least five for
the 1 GiB read and write and for every warm pass) is reported with the ratio to fuse-overlayfs, and our daemon's
CPU seconds, peak RSS and open fds. Needs root (kernel overlayfs, drop_caches). Always unmounts, even on errors
or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("BENCH_CACHE", "/var/tmp/unionfs-bench"))


def sh(command: str, cwd: Path) -> bytes:
    return subprocess.run(command, shell=True, cwd=cwd, capture_output=True, check=True).stdout


def corpus(quick: bool) -> list[Path]:
    """Three layers, top first; built once per size and kept in CACHE."""
    base = CACHE / ("quick" if quick else "full")
    layers = [base / "l1", base / "l2", base / "l3"]
    if (base / "done").exists():
        return layers
    shutil.rmtree(base, ignore_errors=True)
    rng = random.Random(2026)
    files = 2000 if quick else 20000
    for i, layer in enumerate(reversed(layers)):  # bottom first
        share = files * (6, 3, 1)[i] // 10
        for n in range(share):
            path = layer / "usr" / "lib" / f"pkg{n % (share // 40 + 1)}" / f"f{n}.so"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.randbytes(rng.randrange(100, 4000)))
    bottom = layers[-1]
    for n in range(files // 4):  # a tree to delete
        path = bottom / "var" / "cache" / f"d{n % 50}" / f"c{n}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"c" * 64)
    repo = bottom / "src" / "repo"
    repo.mkdir(parents=True)
    for n in range(300 if quick else 2000):
        (repo / f"m{n % 20}").mkdir(exist_ok=True)
        (repo / f"m{n % 20}" / f"file{n}.txt").write_text(f"{n}\n" * 20)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@b",
    }
    for cmd in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "c"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    target = layers[1] / "py"
    for module in sorted(stdlib.glob("*.py"))[:150]:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(module, target / module.name)
    big = layers[1] / "big.bin"
    with open(big, "wb") as f:
        chunk = rng.randbytes(1 << 20)
        for _ in range(64 if quick else 1024):
            f.write(chunk)
    (base / "done").write_text("")
    return layers


@contextlib.contextmanager
def mounted(kind: str, layers: list[Path], scratch: Path, extra: str = "") -> Iterator[tuple[Path, int | None]]:
    """`layers` (top first) mounted by `kind` with a fresh upper under `scratch`; `extra`: more options."""
    for name in ("up", "work", "mnt"):
        shutil.rmtree(scratch / name, ignore_errors=True)
        (scratch / name).mkdir(parents=True)
    up, work, mnt = scratch / "up", scratch / "work", scratch / "mnt"
    options = f"lowerdir={':'.join(map(str, layers))},upperdir={up},workdir={work}" + extra
    pid = None
    if kind == "unionfs":
        subprocess.run(
            [
                sys.executable,
                "-m",
                "unionfs",
                "mount",
                "-o",
                options + ",fsync=0",
                "--pidfile",
                str(scratch / "pid"),
                str(mnt),
            ],
            check=True,
            cwd=ROOT,
        )
        pid = int((scratch / "pid").read_text())
    elif kind == "fuse-overlayfs":
        subprocess.run(["fuse-overlayfs", "-o", options, str(mnt)], check=True, capture_output=True)
    else:
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(mnt)], check=True)
    try:
        yield mnt, pid
    finally:
        if kind == "overlay":
            subprocess.run(["umount", str(mnt)], capture_output=True)
        else:
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
            if pid is not None:
                for _ in range(200):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.02)
        with open("/proc/mounts") as mounts:
            still_mounted = any(line.split()[1] == str(mnt) for line in mounts)
        if still_mounted:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# Workloads that move a whole GiB through the page cache: their cold runs wait for freed memory to settle (see
# bench/NOTES.md).
BULK = ("read-big", "write-big")
# The measurements that swing most from run to run get at least STEADY_RUNS: the 1 GiB ones, and the warm passes,
# most of which take well under a second, so that any noise on the machine moves their medians.
STEADY_RUNS = 5


def drop_caches(settle: float = 0.0) -> None:
    """Start cold: empty page, dentry and inode caches. With `settle`, then wait that long for the memory just
    freed to reach the state of memory that has been free a while. On a virtual machine that reports free pages
    to its host, touching such memory again costs several times more than touching memory freed a moment ago
    (see bench/NOTES.md): without the wait, a run would be cheaper the sooner it began after the run before."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    time.sleep(settle)


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workloads(quick: bool) -> dict[str, Callable[[Path], bytes]]:
    creates = 2000 if quick else 10000
    return {
        "find": lambda m: hashlib.sha256(b"".join(sorted(sh("find . -printf '%P %y\\n'", m).split(b"\n")))).digest(),
        "lstat-all": lambda m: sh("find . -printf '%P %s %m\\n' | sort | sha256sum", m),
        "tar": lambda m: sh("tar cf - --sort=name --mtime=@0 --owner=0 --group=0 usr src/repo | sha256sum", m),
        "read-big": lambda m: sh("sha256sum big.bin", m),
        "write-big": lambda m: sh(
            f"dd if=/dev/zero of=out.bin bs=1M count={64 if quick else 1024} "
            "conv=fsync 2>/dev/null; stat -c %s out.bin",
            m,
        ),
        "copy-up": lambda m: sh(
            "find usr/lib -name '*.so' | sort | head -1000 | "
            'while read f; do printf x >> "$f"; done; '
            'find usr/lib -name "*.so" | sort | head -1000 | xargs cat | sha256sum',
            m,
        ),
        "create-delete": lambda m: sh(
            f"mkdir new && cd new && seq {creates} | xargs touch && cd .. && rm -rf new && echo ok", m
        ),
        "rm-rf": lambda m: sh("rm -rf var/cache && ls var", m),
        "git-status": lambda m: sh("git -C src/repo status --porcelain | wc -l", m),
        "python-import": lambda m: sh(
            f"{sys.executable} -I -c \"import sys; sys.path.insert(0, 'py'); "
            "import importlib, os; n=0\n"
            "for f in sorted(os.listdir('py')):\n"
            "    try: importlib.import_module(f[:-3]); n+=1\n"
            '    except Exception: pass\nprint(n)"',
            m,
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--filesystems", default="unionfs,fuse-overlayfs,overlay")
    parser.add_argument("--workloads", default="")
    parser.add_argument(
        "--settle",
        type=float,
        help=f"seconds to wait after dropping caches before a cold run of {' or '.join(BULK)} "
        "(default 10, 0 with --quick)",
    )
    parser.add_argument("--markdown")
    parser.add_argument("--json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (kernel overlayfs and dropping caches need it)", file=sys.stderr)
        return 2
    settle = args.settle if args.settle is not None else 0.0 if args.quick else 10.0
    layers = corpus(args.quick)
    chosen = workloads(args.quick)
    if args.workloads:
        chosen = {k: v for k, v in chosen.items() if k in args.workloads.split(",")}
    kinds = [k for k in args.filesystems.split(",") if k != "fuse-overlayfs" or shutil.which("fuse-overlayfs")]
    scratch = CACHE / "scratch"
    results: dict[str, dict[str, float]] = {}
    stats: dict[str, float] = {}
    for name, work in chosen.items():
        for mode in ("cold", "warm"):
            key = f"{name} ({mode})"
            results[key] = {}
            outputs = {}
            times: dict[str, list[float]] = {kind: [] for kind in kinds}
            # Runs alternate between filesystems, so that drift in the machine's state (other tenants, memory the
            # host has taken back) falls on each of them alike rather than on whichever ran in a bad stretch. The
            # order turns each round: what ran just before matters here (a virtual machine touches memory freed a
            # moment ago much faster than memory freed a while ago), and each filesystem should follow each other.
            steady = (name in BULK or mode == "warm") and not args.quick
            runs = max(args.runs, STEADY_RUNS) if steady else args.runs
            for run in range(runs):
                for kind in kinds[run % len(kinds) :] + kinds[: run % len(kinds)]:
                    with mounted(kind, layers, scratch) as (mnt, pid):
                        if mode == "warm":
                            work(mnt)  # first pass fills the caches; the measured pass is the same work again
                            if name in ("copy-up", "create-delete", "rm-rf", "write-big"):
                                continue  # changes its own input: a warm rerun measures something else
                        else:
                            drop_caches(settle if name in BULK else 0.0)
                        before, start = cpu_seconds(pid), time.perf_counter()
                        outputs[kind] = work(mnt)
                        times[kind].append(time.perf_counter() - start)
                        if pid is not None:
                            status = Path(f"/proc/{pid}/status").read_text()
                            hwm = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
                            stats["peak_rss_kb"] = max(stats.get("peak_rss_kb", 0), hwm)
                            stats["fds"] = max(stats.get("fds", 0), len(os.listdir(f"/proc/{pid}/fd")))
                            stats[f"cpu {key}"] = cpu_seconds(pid) - before
            for kind in kinds:
                if times[kind]:
                    results[key][kind] = statistics.median(times[kind])
            if any(times.values()):  # progress, and the spread the medians hide
                spread = "; ".join(f"{k} {' '.join(f'{t:.2f}' for t in v)}" for k, v in times.items() if v)
                print(f"bench: {key}: {spread} s", file=sys.stderr, flush=True)
            if len(set(outputs.values())) > 1:
                print(f"bench: {key}: outputs differ between filesystems: {outputs}", file=sys.stderr)
                return 1
            if not results[key]:
                del results[key]
    lines = [
        "| workload | " + " | ".join(kinds) + " | ours / fuse-overlayfs | unionfs daemon CPU |",
        "|---" * (len(kinds) + 3) + "|",
    ]
    by_key: dict[str, float] = {}  # ours over fuse-overlayfs, per workload
    for key, row in results.items():
        ratio = row.get("unionfs", math.nan) / row["fuse-overlayfs"] if "fuse-overlayfs" in row else math.nan
        if not math.isnan(ratio):
            by_key[key] = ratio
        cpu = stats.get(f"cpu {key}", math.nan)
        lines.append(
            f"| {key} | "
            + " | ".join(f"{row.get(k, math.nan):.3f}s" for k in kinds)
            + f" | {ratio:.2f}x | {cpu:.2f}s |"
        )
    ratios = list(by_key.values())
    if ratios:
        geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        lines.append(f"\ngeometric mean of the ratios: {geomean:.2f}x; worst {max(ratios):.2f}x")
        sequential = [r for k, r in by_key.items() if k.startswith(("read-big", "write-big"))]
        warm = [r for k, r in by_key.items() if k.endswith("(warm)")]
        worst = max(by_key, key=lambda k: by_key[k])
        checks = [
            (f"no cell over 1.5x (worst {by_key[worst]:.2f}x, {worst})", by_key[worst] <= 1.5),
            ("geometric mean <= 0.9x", geomean <= 0.9),
        ]
        if sequential:
            checks.append((f"sequential read and write <= 1.2x (worst {max(sequential):.2f}x)", max(sequential) <= 1.2))
        if warm:
            checks.append((f"warm <= 1.5x (worst {max(warm):.2f}x)", max(warm) <= 1.5))
        lines.append("targets: " + "; ".join(f"{name} {'PASS' if ok else 'FAIL'}" for name, ok in checks))
    lines.append(
        f"unionfs daemon: peak RSS {stats.get('peak_rss_kb', 0) / 1024:.0f} MB, at most "
        f"{stats.get('fds', 0):.0f} open fds"
    )
    report = "\n".join(lines)
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "daemon": stats}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
