"""Real Dockerfiles built by imagebuild (as root and as an ordinary user) and by buildah, their rootfs compared.

These builds take 20-40 minutes and reach Debian's mirror, PyPI and npm: `make test-realworld` runs them
(`pytest -m realworld tests/realworld`); a plain `pytest` or `make test` skips them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realworld.builders import AS_ROOT, BUILDERS, CONTEXTS, Lab, open_lab
from tests.realworld.compare import ALLOWED, Allowed, allowed, config_differences, differences, unexplained
from tests.rootless.conftest import User
from tests.rootless.conftest import user as user  # the ordinary user tests/rootless makes, subordinate ids and all

LAB = pytest.StashKey[Lab]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "realworld: real Dockerfiles against buildah (make test-realworld)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "realworld" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="real-world builds take 20-40 minutes: make test-realworld runs them")
    for item in items:
        if item.get_closest_marker("realworld"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lab(user: User, pytestconfig: pytest.Config) -> Iterator[Lab]:
    for tool in ("buildah", "bwrap", "mmdebstrap", "fusermount3"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: make deps, and apt-get install mmdebstrap")
    work = Path(tempfile.mkdtemp(prefix="imagebuild-realworld-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    made = open_lab(work, user)
    pytestconfig.stash[LAB] = made
    try:
        yield made
    finally:
        left = made.close()
        shutil.rmtree(work, ignore_errors=True)
        assert not left, f"mounts were left behind: {left}"


def _counts(lab: Lab, context: str, builder: str, other: str) -> str:
    """How many entries differ between two builds: buildah's is the reference, then root's (as the tests have it)."""
    reference, candidate = sorted((builder, other), key=BUILDERS.index)
    theirs, mine = lab.results.get((context, reference)), lab.results.get((context, candidate))
    if builder == other or mine is None or theirs is None or not mine.built or not theirs.built:
        return "-"
    found = config_differences(theirs.config, mine.config) + unexplained(differences(theirs.entries, mine.entries))
    return str(len({d.path for d in found}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Each build's result and wall-clock time, and how many entries differ from buildah's and root's rootfs."""
    if LAB not in config.stash:
        return
    lab = config.stash[LAB]
    rows = [("context", "builder", "result", "seconds", "differ vs buildah", "differ vs root")]
    for context in CONTEXTS:
        for builder in BUILDERS:
            result = lab.results.get((context, builder))
            if result is None:
                continue
            status = "built" if result.built else "FAILED: " + result.failure.splitlines()[0][:60]
            seconds = f"{result.seconds:.1f}" if result.seconds else "-"
            rows.append(
                (
                    context,
                    builder,
                    status,
                    seconds,
                    _counts(lab, context, builder, "buildah"),
                    _counts(lab, context, builder, "root"),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    terminalreporter.section("real-world builds (wall-clock seconds of each build)")
    for row in rows:
        terminalreporter.write_line("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    allowed_counts: dict[Allowed, list[str]] = {rule: [] for rule in ALLOWED}
    for (context, builder), result in sorted(lab.results.items()):
        reference = lab.results.get((context, "buildah" if builder in AS_ROOT else "root"))
        if builder == "buildah" or not result.built or reference is None or not reference.built:
            continue
        hits = Counter(allowed(d) for d in differences(reference.entries, result.entries))
        for rule, count in hits.items():
            if rule is not None:
                allowed_counts[rule].append(f"{context}-{builder} {count}")
    terminalreporter.write_line("differences the allowlist (tests/realworld/compare.py) let pass:")
    for rule, where in allowed_counts.items():
        patterns, kinds = " ".join(rule.patterns), " ".join(sorted(rule.kinds))
        terminalreporter.write_line(f"  {patterns} ({kinds}): {', '.join(where) or 'none'}")
    for (context, builder), result in sorted(lab.results.items()):
        if result.retried:
            outcome = "built" if result.built else "failed again"
            terminalreporter.write_line(
                f"built twice after a network error ({outcome}): {context} by {builder}: {result.retried}"
            )
    totals = {b: sum(r.seconds for (_, rb), r in lab.results.items() if rb == b and r.built) for b in BUILDERS}
    for (context, builder), count in sorted(lab.stale_pycs.items()):
        terminalreporter.write_line(f"stale .pyc files in the exported {context} image of {builder}: {count}")
    summary = ", ".join(f"{b} {totals[b]:.0f}" for b in BUILDERS)
    terminalreporter.write_line(f"total seconds of successful builds: {summary}")
