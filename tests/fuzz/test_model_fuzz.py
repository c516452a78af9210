"""Three-way differential fuzzing: our mount against kernel overlayfs AND a plain-directory model (machine.py).

It complements test_differential.py with layers in every whiteout/opaque form we read, xattrs, open fds kept
across copy-up, RENAME_NOREPLACE/EXCHANGE, symlinks climbing with `..`, and our inode promises.
`make test` runs a short pass (UNIONFS_FUZZ_EXAMPLES examples, 8 by default). `make fuzz` sets
UNIONFS_FUZZ_MINUTES and repeats rounds of UNIONFS_FUZZ_EXAMPLES (default 50) fresh examples until the time is
up. Failing examples are saved in .hypothesis/ and replayed first by the next run, short or long.
UNIONFS_FUZZ_TARGET=fuse-overlayfs fuzzes that filesystem instead of ours (a conformance run).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import run_state_machine_as_test

from tests.fuzz.machine import UnionMachine
from tests.support import fuse_usable

ROOT = Path(__file__).resolve().parents[2]
DATABASE = DirectoryBasedExampleDatabase(str(ROOT / ".hypothesis" / "examples"))
MINUTES = float(os.environ.get("UNIONFS_FUZZ_MINUTES", "0") or 0)
EXAMPLES = int(os.environ.get("UNIONFS_FUZZ_EXAMPLES", "0") or 0)
LONG = MINUTES > 0
COMMON = settings(deadline=None, database=DATABASE, suppress_health_check=list(HealthCheck), print_blob=True)
settings.register_profile("unionfs-fuzz-short", max_examples=EXAMPLES or 8, stateful_step_count=25, parent=COMMON)
settings.register_profile("unionfs-fuzz-long", max_examples=EXAMPLES or 200, stateful_step_count=60, parent=COMMON)
#: pytest-timeout for the long run: the budget plus time to shrink a failure
TIMEOUT = int(MINUTES * 60) + 900 if LONG else 300


@pytest.mark.fuse
@pytest.mark.oracle
@pytest.mark.timeout(TIMEOUT)
def test_three_way_differential() -> None:
    reason = fuse_usable()
    if reason is not None:
        pytest.skip(f"FUSE mounts cannot be made here: {reason}")
    if not LONG:
        run_state_machine_as_test(UnionMachine, settings=settings.get_profile("unionfs-fuzz-short"))
        return
    # the long run: chunks of fresh random examples until the time is up (each chunk replays saved failures)
    deadline = time.monotonic() + MINUTES * 60
    chunk = settings(settings.get_profile("unionfs-fuzz-long"), max_examples=EXAMPLES or 50)
    while time.monotonic() < deadline:
        run_state_machine_as_test(UnionMachine, settings=chunk)
        chunk = settings(chunk, phases=[Phase.generate, Phase.target, Phase.shrink, Phase.explain])
