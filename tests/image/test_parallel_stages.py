"""Independent stages build at the same time: the time of the slowest, not the sum; the first failure stops the
others with nothing left behind; --target builds only the stages it needs; the image is the one a serial build
(--jobs 1) makes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.image.conftest import Tool, dockerfile
from tests.support import is_mounted

FINAL = "FROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nCOPY --from=c /c /c\n"


def stages(sleeps: dict[str, int]) -> str:
    return "".join(f"FROM busybox AS {n}\nRUN sleep {s} && echo {n} > /{n}\n" for n, s in sleeps.items()) + FINAL


def timed_build(tool: Tool, ctx: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    built = tool.build(ctx, "--no-cache", *args)
    return time.monotonic() - start, built


def test_three_sleeping_stages_take_the_time_of_one(tool: Tool, tmp_path: Path) -> None:
    one, three = tmp_path / "one", tmp_path / "three"
    one.mkdir()
    three.mkdir()
    dockerfile(one, stages({"a": 6, "b": 0, "c": 0}))  # the same stages and copies, one of them sleeping
    dockerfile(three, stages({"a": 6, "b": 6, "c": 6}))
    alone, _ = timed_build(tool, one)
    together, built = timed_build(tool, three)
    print(f"one sleeping stage: {alone:.1f} s, three: {together:.1f} s")
    assert together - alone <= 4, f"three 6 s stages took {together:.1f} s, one took {alone:.1f} s"
    for n in "abc":  # each step's output still a block under its header
        assert re.search(rf"Step \d+/10 : RUN sleep 6 && echo {n} > /{n}\n ---> [0-9a-f]{{12}}\n", built.stdout)


def test_parallel_and_serial_builds_make_the_same_image(tool: Tool, ctx: Path) -> None:
    text = "".join(f"FROM busybox AS {n}\nRUN echo {n} > /{n} && mkdir -p /d/{n} && echo x > /d/{n}/f\n" for n in "abc")
    dockerfile(ctx, text + FINAL + "COPY --from=a /d /d\nCOPY --from=c /d /d\n")
    ids = set()
    for jobs in ("1", "3", "1", "8"):
        built = tool.build(ctx, "--no-cache", "--timestamp", "1700000000", "--jobs", jobs)
        ids.add(tool.image_id(built))
    assert len(ids) == 1


def test_a_failing_stage_stops_the_others_and_leaves_nothing(tool: Tool, ctx: Path) -> None:
    dockerfile(
        ctx,
        "FROM busybox AS a\nRUN sleep 43 && echo a > /a\n"
        "FROM busybox AS b\nRUN sleep 1 && echo going wrong && exit 7\n"
        "FROM busybox AS c\nRUN echo c > /c\nRUN sleep 43\n" + FINAL,
    )
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagebuild", "--root", str(tool.root), "build", str(ctx)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=120)
    took = time.monotonic() - start
    assert proc.returncode == 7, out + err
    assert err.strip().splitlines() == [f"imagebuild: error: {ctx / 'Dockerfile'}:4: RUN failed with exit status 7"]
    assert took < 30, f"the other stages ran on: the build took {took:.1f} s"
    assert "[4] going wrong" in out and out.count("cancelled: another stage failed") == 2
    assert "Successfully built" not in out
    assert os.listdir(tool.root / "tmp") == []  # no scratch upper, work or layer dir
    rootfs_dirs = [p for p in os.listdir("/tmp") if p.startswith(f"imagebuild-rootfs-{proc.pid}-")]
    assert rootfs_dirs == []  # the mount points, unmounted and removed
    with open("/proc/mounts") as f:
        mounts = [line.split()[1] for line in f]
    assert not [m for m in mounts if f"imagebuild-rootfs-{proc.pid}-" in m and is_mounted(m)]
    assert not _processes_with(str(tool.root)) and not _processes_with("sleep 43")  # no daemon, no command


def _processes_with(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(pid) != os.getpid():
            found.append(cmdline)
    return found


def test_target_builds_only_the_stages_it_needs(tool: Tool, ctx: Path) -> None:
    dockerfile(
        ctx,
        "FROM busybox AS base\nRUN echo base > /base\n"
        "FROM busybox AS broken\nRUN exit 9\n"
        "FROM base AS app\nRUN echo app > /app\n"
        "FROM busybox AS other\nCOPY --from=broken /x /x\n",
    )
    built = tool.build(ctx, "--target", "app", "-t", "targeted-app")
    assert "Skipping stage 'broken' (1): stage 'app' (2) does not need it" in built.stdout
    assert "Skipping stage 'other' (3): stage 'app' (2) does not need it" in built.stdout
    assert "RUN exit 9" not in built.stdout
    assert "Step 4/4 : RUN echo app > /app" in built.stdout
    assert tool.run("run", "--rm", "targeted-app", "cat", "/base", "/app").stdout.split() == ["base", "app"]


def test_the_same_step_in_two_stages_at_once_runs_once(tool: Tool, ctx: Path) -> None:
    token = os.urandom(6).hex()  # a step no earlier build cached
    step = f"RUN sleep 2 && echo {token} > /same\n"
    dockerfile(
        ctx,
        f"FROM busybox AS a\n{step}FROM busybox AS b\n{step}FROM busybox\nCOPY --from=a /same /a\n"
        "COPY --from=b /same /b\n",
    )
    built = tool.build(ctx)
    assert built.stdout.count(" ---> Using cache") == 1  # the second waited for the first, then reused its layer


def test_ctrl_c_stops_every_stage_and_leaves_nothing(tool: Tool, ctx: Path) -> None:
    dockerfile(
        ctx, "".join(f"FROM busybox AS {n}\nRUN echo started && sleep 44 && echo {n} > /{n}\n" for n in "abc") + FINAL
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagebuild", "--root", str(tool.root), "build", str(ctx)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal, even under `&`
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "] started" in line:  # a RUN is running
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "imagebuild: interrupted"
    assert "cancelled: the build was interrupted" in out
    assert os.listdir(tool.root / "tmp") == []
    assert [p for p in os.listdir("/tmp") if p.startswith(f"imagebuild-rootfs-{proc.pid}-")] == []
    assert not _processes_with(str(tool.root)) and not _processes_with("sleep 44")
