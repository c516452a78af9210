"""Stages built at the same time: each wanted stage starts (in a thread of its own) as soon as the stages it reads
are built, at most `jobs` at once; the first stage that fails cancels the others and the build raises its error.

Cancelling kills the process group of every RUN command still running (registered through `Cancel.watch`); the
steps then fail, and their own cleanup (unmount, removal of the scratch upper) runs as it does for any failure.
Stages that have not started do not start. The build waits for every stage to have cleaned up before it raises.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from imagebuild.builder.stagegraph import StageGraph
from imagebuild.errors import BuildError

DEFAULT_JOBS_FLOOR = 4  # RUN steps mostly wait (network, disk): a few stages at once pay off even on one CPU


def default_jobs() -> int:
    """How many stages build at once unless `--jobs` says: the number of CPUs, and at least 4."""
    return max(DEFAULT_JOBS_FLOOR, os.cpu_count() or 1)


class Cancelled(BuildError):
    """A stage stopped because another failed (never the error a build reports)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cancelled: {reason}")


class Cancel:
    """The build's stop signal, and the RUN processes it kills when it is given."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason = ""
        self._running: set[subprocess.Popen[bytes]] = set()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled(self.reason)

    def set(self, reason: str) -> None:
        with self._lock:
            if not self._event.is_set():
                self.reason = reason
            self._event.set()
            for proc in self._running:
                _kill_group(proc)

    @contextlib.contextmanager
    def watch(self, proc: subprocess.Popen[bytes]) -> Iterator[None]:
        """While the block runs, a cancel kills `proc`'s process group (it must lead one: process_group=0)."""
        with self._lock:
            if self._event.is_set():
                _kill_group(proc)
            self._running.add(proc)
        try:
            yield
        finally:
            with self._lock:
                self._running.discard(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_stages(
    graph: StageGraph, wanted: frozenset[int], build: Callable[[int], None], jobs: int, cancel: Cancel
) -> None:
    """Build every wanted stage with `build(index)`, each once its dependencies are built, `jobs` at a time.

    The first failure (in the order failures are seen) is raised once every started stage has ended; a
    KeyboardInterrupt cancels the running stages the same way."""
    done: set[int] = set()
    started: set[int] = set()
    running: dict[Future[None], int] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="stage") as pool:
        try:
            while True:
                if failure is None:
                    for index in graph.ready(done, started, wanted)[: max(1, jobs) - len(running)]:
                        started.add(index)
                        running[pool.submit(build, index)] = index
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = running.pop(future)
                    error = future.exception()
                    if error is None:
                        done.add(index)
                    elif failure is None and not isinstance(error, Cancelled):
                        failure = error
                        cancel.set("another stage failed")
        except BaseException as exc:  # Ctrl-C while waiting: stop the stages, let them clean up, then go
            cancel.set("the build was interrupted")
            wait(running)
            raise exc
    if failure is not None:
        raise failure
    if cancel.is_set:
        raise Cancelled(cancel.reason)


class KeyedLocks:
    """A lock for each key, made when first asked for."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield
