"""Benchmark: `run --lazy REF cat /small/file` against `pull REF` + `run REF cat /small/file`.

python bench/lazy.py [--big-mb 300] [--small 2000] [--runs 3] [--markdown OUT]

An image of a busybox layer and one layer of ~300 MB: random, incompressible data in a few big files plus many
small files, built and pushed as eStargz to a local registry (Debian's docker-registry on 127.0.0.1, its access
log on). Each run starts from a fresh store: the time until `cat` prints (the first line of output) and the
bytes of blobs the registry sent (from its access log), for the full pull and run, then for the lazy run. The
median over the runs is reported. Targets: the lazy run in at most 1/5 of the time, fetching at most 15% of the
bytes. Needs docker-registry, bubblewrap and busybox-static (the test suite's needs); root or not.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGEBUILD = [sys.executable, "-m", "imagebuild"]
BLOB_GET = re.compile(r'"GET /v2/[^ ]*/blobs/sha256:[0-9a-f]+ HTTP/[0-9.]+" 20[06] (\d+)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(work: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    config = work / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    log = work / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"127.0.0.1:{port}", log


def sent(log: Path) -> int:
    return sum(int(m.group(1)) for m in BLOB_GET.finditer(log.read_text(errors="replace")))


def imagebuild(store: Path, *args: str) -> None:
    subprocess.run([*IMAGEBUILD, "--root", str(store), *args], check=True, capture_output=True, cwd=ROOT)


def first_output(store: Path, *args: str) -> tuple[float, str]:
    """Seconds until the command prints its first line, and that line (the command then runs to its end)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [*IMAGEBUILD, "--root", str(store), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode(errors="replace")
    elapsed = time.monotonic() - start
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"imagebuild {' '.join(args)} failed: {err.decode()}")
    return elapsed, line


def make_image(work: Path, registry: str, big_mb: int, small: int) -> str:
    store = work / "src-store"
    busybox = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.exists(p)), None)
    if busybox is None:
        raise SystemExit("busybox-static is needed (apt-get install busybox-static)")
    base = work / "busybox"
    base.mkdir()
    shutil.copy(ROOT / "examples" / "busybox" / "Dockerfile", base / "Dockerfile")
    shutil.copy(busybox, base / "busybox")
    imagebuild(store, "build", "-t", "busybox", str(base))
    ctx = work / "ctx"
    (ctx / "big").mkdir(parents=True)
    (ctx / "small").mkdir()
    for n in range(3):
        with open(ctx / "big" / f"blob{n}", "wb") as f:
            for _ in range(big_mb // 3):
                f.write(os.urandom(1 << 20))
    for n in range(small):
        (ctx / "small" / f"file{n:05d}").write_text(f"small file {n}\n{os.urandom(1024).hex()}\n")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY big /big/\nCOPY small /small/\n")
    imagebuild(store, "build", "-t", "lazy-bench", str(ctx))
    ref = f"{registry}/bench/lazy:1"
    imagebuild(store, "push", "--insecure", "--estargz", "lazy-bench", ref)
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(ctx, ignore_errors=True)
    return ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mb", type=int, default=300)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--markdown", metavar="OUT")
    args = parser.parse_args()
    if shutil.which("docker-registry") is None:
        raise SystemExit("docker-registry (Debian package) is needed")
    work = Path(tempfile.mkdtemp(prefix="lazy-bench-"))
    proc, registry, log = start_registry(work)
    try:
        ref = make_image(work, registry, args.big_mb, args.small)
        probe = "/small/file00042"
        full_t, full_b, lazy_t, lazy_b = [], [], [], []
        for run in range(args.runs):
            store = work / f"full-{run}"
            before = sent(log)
            start = time.monotonic()
            imagebuild(store, "pull", "--insecure", ref)
            pulled = time.monotonic() - start
            seconds, _ = first_output(store, "run", "--rm", ref, "cat", probe)
            full_t.append(pulled + seconds)
            full_b.append(sent(log) - before)
            shutil.rmtree(store, ignore_errors=True)
            store = work / f"lazy-{run}"
            before = sent(log)
            seconds, line = first_output(store, "run", "--rm", "--lazy", "--insecure", ref, "cat", probe)
            assert line == "small file 42\n", line
            lazy_t.append(seconds)
            lazy_b.append(sent(log) - before)
            shutil.rmtree(store, ignore_errors=True)
        image = sum(p.stat().st_size for p in (work / "data").rglob("data") if p.is_file())
        rows = [
            ("pull + run", statistics.median(full_t), statistics.median(full_b)),
            ("run --lazy", statistics.median(lazy_t), statistics.median(lazy_b)),
        ]
        lines = [
            f"Image: {image / 1e6:.0f} MB of blobs ({args.big_mb} MB in 3 random files, {args.small} small files); "
            f"median of {args.runs} runs; `cat`-like read of one small file.",
            "",
            "| | time to first output | bytes fetched | share of the image |",
            "|---|---|---|---|",
            *(f"| {name} | {t:.2f}s | {b / 1e6:.1f} MB | {100 * b / image:.1f}% |" for name, t, b in rows),
            "",
            f"lazy / full: {rows[1][1] / rows[0][1]:.2f}x the time, {rows[1][2] / rows[0][2]:.3f}x the bytes",
        ]
        text = "\n".join(lines)
        print(text)
        if args.markdown:
            Path(args.markdown).write_text(text + "\n")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
