"""Benchmark: what an image build costs with imagebuild, against buildah in the same run.

python bench/build.py [--rootless] [--run-fs auto|overlay|unionfs] [--contexts files,multistage,pyapp|all] [--runs N]
                      [--markdown OUT] [--json OUT]

For each context of the real-world corpus (tests/realworld/contexts) and each builder, in a fresh store that holds
only debian:bookworm (built there from the same tarball, untimed): a cold build, a no-op rebuild (nothing changed:
every step from the cache) and a one-file edit (a line appended to a file only the last COPY takes, then a rebuild).
imagebuild builds as root (its RUN steps on the kernel's overlayfs, as `build` chooses by default; `--run-fs
unionfs` times them on unionfs, as on a machine without it); buildah runs `bud --layers --isolation chroot` as root
with its default storage driver (kernel overlay). With --rootless both build as an ordinary user with a subordinate
id range (the one tests/rootless makes): imagebuild as the real-world tests run it rootless, buildah with the
overlay driver through fuse-overlayfs, as rootless buildah and podman use it. The builders alternate from run to run
and their order turns each run; the median of the runs is reported with the ratio ours / buildah. Targets: cold
builds at most 0.8x buildah's (geometric mean over the contexts), a no-op rebuild within 1 s. Every store, container
and mount is removed after each run. Needs root (--rootless drops to the user), buildah and mmdebstrap (and fuse-
overlayfs for --rootless); RUN steps reach Debian's mirror, PyPI and npm.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.realworld.builders import (  # noqa: E402
    BASE_TAG,
    Buildah,
    BuildahRootless,
    Builder,
    ImagebuildRoot,
    ImagebuildRootless,
    Lab,
    failing_step,
    prepare_context,
    tag_of,
)
from tests.rootless.conftest import USER, User, ordinary_user, why_no_user  # noqa: E402

DEFAULT_CONTEXTS = ("files", "multistage", "pyapp")
ALL_CONTEXTS = ("files", "multistage", "pyapp", "apt", "users", "node")
# The file each context's one-file edit touches: one only its last COPY takes (for multistage, the source the build
# stage compiles and the last stage copies the binary of), and the comment syntax a line appended to it uses.
EDITS = {
    "files": ("scripts/migrate.sh", "# edited"),
    "multistage": ("hello.c", "/* edited */"),
    "pyapp": ("app.py", "# edited"),
    "apt": ("sudoers.d-app", "# edited"),
    "users": ("settings.ini", "; edited"),
    "node": ("server.js", "// edited"),
}
CASES = ("cold", "no-op", "one-file edit")
BUILDERS = ("imagebuild", "buildah")
COLD_TARGET = 0.8
NOOP_TARGET = 1.0


@dataclass
class Timings:
    """Seconds per (context, case, builder), one entry a run; failures as messages."""

    seconds: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, context: str, case: str, builder: str, value: float) -> None:
        self.seconds.setdefault((context, case, builder), []).append(value)

    def median(self, context: str, case: str, builder: str) -> float | None:
        values = self.seconds.get((context, case, builder))
        return statistics.median(values) if values else None


def make_builder(name: str, work: Path, user: User | None, run_fs: str = "auto") -> Builder:
    """The builder, as root (imagebuild's RUN steps on `run_fs`), or with `user` as that ordinary user."""
    if user is None:
        return ImagebuildRoot(work, run_fs=run_fs) if name == "imagebuild" else Buildah(work)
    return ImagebuildRootless(work, user) if name == "imagebuild" else BuildahRootless(work, user)


def timed_build(builder: Builder, context: Path, tag: str) -> float:
    started = time.monotonic()
    ok, output = builder.build(context, tag)
    seconds = time.monotonic() - started
    if not ok:
        raise RuntimeError(failing_step(output))
    return seconds


def one_run(
    context: str, builder_name: str, scratch: Path, timings: Timings, user: User | None = None, run_fs: str = "auto"
) -> None:
    """The three cases for one context and builder, in a store of their own, removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix=f"{context}-{builder_name}-", dir=scratch))
    os.chmod(work, 0o755)
    lab: Lab | None = None
    try:
        builder = make_builder(builder_name, work, user, run_fs)
        lab = Lab(work, {builder_name: builder})
        base = prepare_context("base", lab.contexts)
        ok, output = builder.build(base, BASE_TAG)
        if not ok:
            raise RuntimeError(f"the base did not build:\n{failing_step(output)}")
        directory = prepare_context(context, lab.contexts)
        tag = tag_of(context)
        timings.add(context, "cold", builder_name, timed_build(builder, directory, tag))
        timings.add(context, "no-op", builder_name, timed_build(builder, directory, tag))
        name, line = EDITS[context]
        with open(directory / name, "a") as f:
            f.write(f"{line}\n")
        timings.add(context, "one-file edit", builder_name, timed_build(builder, directory, tag))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        timings.failures.append(f"{context} {builder_name}: {e}")
        print(f"  FAILED {context} {builder_name}: {e}", flush=True)
    finally:
        left = lab.close() if lab is not None else []
        shutil.rmtree(work, ignore_errors=True)
        if left:
            timings.failures.append(f"{context} {builder_name} left behind: {left}")


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def report(timings: Timings, contexts: list[str]) -> tuple[list[str], list[str]]:
    """The table (markdown) and the targets' PASS/FAIL lines."""
    rows = ["| context | case | imagebuild | buildah | ours / buildah |", "|---|---|---|---|---|"]
    cold_ratios: list[float] = []
    noops: list[tuple[str, float]] = []
    for context in contexts:
        for case in CASES:
            ours, theirs = (timings.median(context, case, b) for b in BUILDERS)
            ratio = ours / theirs if ours is not None and theirs else None
            if case == "cold" and ratio is not None:
                cold_ratios.append(ratio)
            if case == "no-op" and ours is not None:
                noops.append((context, ours))
            cells = [f"{v:.2f}s" if v is not None else "-" for v in (ours, theirs)]
            rows.append(f"| {context} | {case} | {cells[0]} | {cells[1]} | {f'{ratio:.2f}x' if ratio else '-'} |")
    verdicts = []
    if cold_ratios:
        mean = geometric_mean(cold_ratios)
        verdict = "PASS" if mean <= COLD_TARGET and len(cold_ratios) == len(contexts) else "FAIL"
        verdicts.append(f"{verdict}: cold build {mean:.2f}x buildah (geometric mean; target <= {COLD_TARGET}x)")
    else:
        verdicts.append("FAIL: no cold build to compare")
    if noops:
        worst_context, worst = max(noops, key=lambda item: item[1])
        verdict = "PASS" if worst <= NOOP_TARGET and len(noops) == len(contexts) else "FAIL"
        verdicts.append(
            f"{verdict}: no-op rebuild at most {worst:.2f}s ({worst_context}; target <= {NOOP_TARGET:.0f}s)"
        )
    else:
        verdicts.append("FAIL: no no-op rebuild measured")
    if timings.failures:
        verdicts.append(f"FAIL: {len(timings.failures)} build(s) failed or left something behind")
    return rows, verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contexts", default=",".join(DEFAULT_CONTEXTS), help="comma-separated, or 'all'")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--rootless", action="store_true", help="both builders as an ordinary user (buildah with fuse-overlayfs)"
    )
    parser.add_argument(
        "--run-fs",
        choices=("auto", "overlay", "unionfs"),
        default="auto",
        help="what imagebuild's RUN steps run on as root (imagebuild build --run-fs; default auto)",
    )
    parser.add_argument("--markdown", help="write the table and verdicts here too")
    parser.add_argument("--json", help="write every run's seconds here")
    args = parser.parse_args()
    contexts = list(ALL_CONTEXTS) if args.contexts == "all" else args.contexts.split(",")
    unknown = [c for c in contexts if c not in EDITS]
    if unknown:
        parser.error(f"unknown contexts: {', '.join(unknown)} (known: {', '.join(ALL_CONTEXTS)})")
    if os.geteuid() != 0:
        parser.error("needs root (buildah's overlay storage, as the real-world tests run it)")
    for tool in ("buildah", "mmdebstrap", "fusermount3", *(("fuse-overlayfs", "newuidmap") if args.rootless else ())):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed: make deps, and apt-get install mmdebstrap")
    if args.rootless and (reason := why_no_user()) is not None:
        parser.error(reason)
    scratch = Path(tempfile.mkdtemp(prefix="imagebuild-bench-build-", dir="/var/tmp"))
    os.chmod(scratch, 0o755)
    timings = Timings()
    try:
        with ordinary_user() if args.rootless else contextlib.nullcontext() as user:
            for run in range(args.runs):
                order = BUILDERS if run % 2 == 0 else BUILDERS[::-1]
                for context in contexts:
                    for builder_name in order:
                        print(f"run {run + 1}/{args.runs}: {context} with {builder_name}", flush=True)
                        one_run(context, builder_name, scratch, timings, user, args.run_fs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows, verdicts = report(timings, contexts)
    who = (
        f"rootless (as {USER}; buildah with fuse-overlayfs)"
        if args.rootless
        else f"as root (buildah: kernel overlay; imagebuild: --run-fs {args.run_fs})"
    )
    print(f"\n{who}: medians of {args.runs} run(s), wall-clock seconds:")
    print("\n".join(rows))
    print("\n".join(verdicts))
    for failure in timings.failures:
        print(f"  {failure}")
    if args.markdown:
        Path(args.markdown).write_text("\n".join([*rows, "", *verdicts]) + "\n")
    if args.json:
        data = {"|".join(key): values for key, values in timings.seconds.items()}
        Path(args.json).write_text(json.dumps({"seconds": data, "failures": timings.failures}, indent=1) + "\n")
    return 0 if all(v.startswith("PASS") for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
