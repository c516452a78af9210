"""Load on a mount: processes doing mixed operations for a bounded time, each checking what it sees against
its own model of what it did. Any difference, or an errno a local filesystem would not give, is an error."""

from __future__ import annotations

import errno
import multiprocessing
import os
import random
import shutil
import time
from dataclasses import dataclass


@dataclass
class Result:
    worker: int
    operations: int
    errors: list[str]


def _worker(root: str, worker: int, seconds: float, seed: int, queue: multiprocessing.Queue[Result]) -> None:
    rng = random.Random(seed * 1000 + worker)
    base = os.path.join(root, f"stress-{seed}-{worker}")  # a fresh directory per run: the model starts empty
    shutil.rmtree(base, ignore_errors=True)
    model: dict[str, bytes] = {}
    dirs: set[str] = set()
    errors: list[str] = []
    ops = 0
    lowers = [os.path.join(root, n) for n in sorted(os.listdir(root)) if not n.startswith("stress-")][:20]
    deadline = time.monotonic() + seconds
    try:
        os.makedirs(base, exist_ok=True)
    except OSError as exc:
        queue.put(Result(worker, 0, [f"mkdir {base}: {exc}"]))
        return
    while time.monotonic() < deadline and len(errors) < 20:
        ops += 1
        op = rng.choice(["create", "append", "read", "rename", "unlink", "mkdir", "rmdir", "list", "truncate", "lower"])
        name = f"f{rng.randrange(30)}"
        path = os.path.join(base, name)
        try:
            if op == "create":
                data = rng.randbytes(rng.randrange(1, 20000))
                with open(path, "wb") as f:
                    f.write(data)
                model[name] = data
            elif op == "append" and name in model:
                extra = rng.randbytes(rng.randrange(1, 5000))
                with open(path, "ab") as f:
                    f.write(extra)
                model[name] += extra
            elif op == "read" and name in model:
                with open(path, "rb") as f:
                    if f.read() != model[name]:
                        errors.append(f"{path}: content differs from what was written")
            elif op == "rename" and name in model:
                target = f"f{rng.randrange(30)}"
                os.rename(path, os.path.join(base, target))
                model[target] = model.pop(name)
            elif op == "unlink" and name in model:
                os.unlink(path)
                del model[name]
            elif op == "mkdir":
                d = f"d{rng.randrange(5)}"
                if d not in dirs:
                    os.mkdir(os.path.join(base, d))
                    dirs.add(d)
            elif op == "rmdir" and dirs:
                d = rng.choice(sorted(dirs))
                os.rmdir(os.path.join(base, d))
                dirs.discard(d)
            elif op == "list":
                seen = set(os.listdir(base))
                if seen != set(model) | dirs:
                    errors.append(f"{base}: listing {sorted(seen ^ (set(model) | dirs))} differs")
            elif op == "truncate" and name in model:
                size = rng.randrange(len(model[name]) + 1)
                os.truncate(path, size)
                model[name] = model[name][:size]
            elif op == "lower" and lowers:
                target = rng.choice(lowers)
                if os.path.isdir(target):
                    os.listdir(target)
                else:
                    os.stat(target)
        except OSError as exc:
            errors.append(f"{op} {path}: {errno.errorcode.get(exc.errno or 0, exc.errno)} {exc.strerror}")
    queue.put(Result(worker, ops, errors))


def run(root: str, processes: int, seconds: float, seed: int) -> list[Result]:
    """Run `processes` workers on the mount at `root` for `seconds`; returns their results."""
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[Result] = context.Queue()
    workers = [context.Process(target=_worker, args=(root, i, seconds, seed, queue)) for i in range(processes)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=seconds + 120) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    return sorted(results, key=lambda r: r.worker)
