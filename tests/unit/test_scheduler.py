"""The stage scheduler: ready stages at once up to --jobs, dependencies first, the first failure cancels the rest
(their processes killed) and is the error raised."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from imagebuild.builder.scheduler import Cancel, Cancelled, run_stages
from imagebuild.builder.stagegraph import StageGraph


def chain_and_fan() -> StageGraph:
    # 0, 1, 2 independent; 3 reads 0 and 1; 4 reads 3 and 2
    return StageGraph((frozenset(), frozenset(), frozenset(), frozenset({0, 1}), frozenset({2, 3})))


def test_independent_stages_run_at_once_up_to_jobs_and_after_their_dependencies() -> None:
    lock = threading.Lock()
    running: set[int] = set()
    most = 0
    order: list[tuple[str, int]] = []

    def build(index: int) -> None:
        nonlocal most
        with lock:
            running.add(index)
            most = max(most, len(running))
            order.append(("start", index))
        time.sleep(0.2)
        with lock:
            running.discard(index)
            order.append(("end", index))

    graph = chain_and_fan()
    run_stages(graph, frozenset(range(5)), build, 2, Cancel())
    assert most == 2
    for index, deps in enumerate(graph.deps):
        for dep in deps:
            assert order.index(("end", dep)) < order.index(("start", index))
    most = 0
    order.clear()
    run_stages(graph, frozenset({0, 1, 3}), build, 8, Cancel())  # only the wanted ones
    assert sorted(i for what, i in order if what == "start") == [0, 1, 3] and most == 2


def test_the_first_failure_cancels_the_others_and_is_raised() -> None:
    cancel = Cancel()
    started: list[int] = []
    seen_cancel: list[int] = []

    def build(index: int) -> None:
        started.append(index)
        if index == 1:
            time.sleep(0.1)
            raise ValueError("stage 1 broke")
        for _ in range(200):  # a long stage that looks for the cancel, as each step does
            try:
                cancel.check()
            except Cancelled:
                seen_cancel.append(index)
                raise
            time.sleep(0.01)

    with pytest.raises(ValueError, match="stage 1 broke"):
        run_stages(chain_and_fan(), frozenset(range(5)), build, 8, cancel)
    assert sorted(started) == [0, 1, 2]  # 3 and 4 never start
    assert sorted(seen_cancel) == [0, 2]
    assert cancel.reason == "another stage failed"


def test_a_cancel_kills_the_whole_process_group_of_a_watched_command() -> None:
    cancel = Cancel()
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30; wait"], process_group=0)
    start = time.monotonic()
    with cancel.watch(proc):
        threading.Timer(0.2, cancel.set, args=("test",)).start()
        assert proc.wait(10) == -9
    assert time.monotonic() - start < 5
    assert wait_until(lambda: not live_in_group(proc.pid))  # the background sleep went with it
    late = subprocess.Popen(["sleep", "30"], process_group=0)  # watched after the cancel: killed at once
    with cancel.watch(late):
        assert late.wait(5) == -9


def live_in_group(pgid: int) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(pid))
    return found


def wait_until(predicate: Callable[[], bool], timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
