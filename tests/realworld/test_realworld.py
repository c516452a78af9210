"""Each context built by each builder: buildah's build must succeed (it is the reference); imagebuild as root
must give buildah's rootfs, and imagebuild as an ordinary user root's, entry by entry, but for the paths
`compare.ALLOWED` lists with its reasons, and the same config (Env, Cmd, WorkingDir, User, ports, ...).

A failure we have seen and understood is marked xfail (strict) with its cause, and only while the failure still
matches that cause (the build failing there with that message, every difference of that kind); anything else
fails. A fix turns the mark into an XPASS: remove the entry from KNOWN then.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from _pytest.mark.structures import ParameterSet

from tests.realworld.builders import AS_ROOT, BUILD_TIMEOUT, BUILDERS, CONTEXTS, Lab
from tests.realworld.compare import Difference, config_differences, differences, report, unexplained
from tests.realworld.shipped import stale_pycs


class KnownFailure(Exception):
    """A failure whose cause is known: what the xfail marks expect."""


@dataclass(frozen=True)
class Known:
    reason: str
    build: str = ""  # the failed build's last lines match this
    differs: Callable[[Difference], bool] | None = None  # every remaining difference is one of these


# (context, builder) -> the known cause of its failure. Seen and since fixed: rootless RUN steps mapped only the
# building user, so apt (`setgroups 65534 failed`), useradd and chown to other ids failed; a RUN step had no
# /etc/resolv.conf in an image without one (registry-base), so apt could not resolve its mirror.
KNOWN: dict[tuple[str, str], Known] = {}


def cases() -> Iterator[ParameterSet]:
    for context in CONTEXTS:
        for builder in BUILDERS:
            known = KNOWN.get((context, builder))
            marks = [pytest.mark.xfail(strict=True, raises=KnownFailure, reason=known.reason)] if known else []
            yield pytest.param(context, builder, marks=marks, id=f"{context}-{builder}")


@pytest.mark.realworld
@pytest.mark.timeout(2 * BUILD_TIMEOUT)
@pytest.mark.parametrize(("context", "builder"), list(cases()))
def test_build(lab: Lab, context: str, builder: str) -> None:
    result = lab.result(context, builder)
    known = KNOWN.get((context, builder))
    if not result.built:
        message = f"{builder} could not build {context} ({result.seconds:.0f} s):\n{result.failure}"
        if known and known.build and re.search(known.build, result.failure):
            raise KnownFailure(message)
        pytest.fail(message, pytrace=False)
    if builder == "buildah":
        return  # the reference: it has to build, and it did
    reference = "buildah" if builder in AS_ROOT else "root"
    if builder == "rootless" and not lab.result(context, reference).built:
        reference = "buildah"  # root failed: compare with what a correct build gives
    theirs = lab.result(context, reference)
    if not theirs.built:
        pytest.skip(f"nothing to compare with: {reference} could not build {context}")
    found = config_differences(theirs.config, result.config) + unexplained(differences(theirs.entries, result.entries))
    if found:
        message = report(found, reference, builder)
        if known and known.differs and all(known.differs(d) for d in found):
            raise KnownFailure(message)
        pytest.fail(message, pytrace=False)


# (context, builder) -> the known cause of stale .pyc files in its export; none today. Seen and since fixed:
# layer tars clamped every mtime to 0, so each .pyc's recorded source mtime (1,524 of them) no longer matched.
SHIPPED_KNOWN: dict[tuple[str, str], str] = {}


def shipped_cases() -> Iterator[ParameterSet]:
    for builder in BUILDERS:
        reason = SHIPPED_KNOWN.get(("pyapp", builder))
        marks = [pytest.mark.xfail(strict=True, raises=KnownFailure, reason=reason)] if reason else []
        yield pytest.param("pyapp", builder, marks=marks, id=f"pyapp-{builder}")


@pytest.mark.realworld
@pytest.mark.timeout(2 * BUILD_TIMEOUT)
@pytest.mark.parametrize(("context", "builder"), list(shipped_cases()))
def test_shipped_pycs_match_their_sources(lab: Lab, context: str, builder: str) -> None:
    """The image as it leaves the machine (an OCI layout): every .pyc still matches its source, so python loads
    it instead of compiling the module again at every start."""
    if not lab.result(context, builder).built:
        pytest.skip(f"{builder} could not build {context}: test_build[{context}-{builder}] says why")
    stale = stale_pycs(lab.export(context, builder))
    lab.stale_pycs[(context, builder)] = len(stale)
    if stale:
        message = f"{len(stale)} .pyc files in {builder}'s exported {context} image are stale, e.g.\n" + "\n".join(
            f"  {pyc.path}: records source mtime {pyc.recorded}, the source has {pyc.source}" for pyc in stale[:10]
        )
        if (context, builder) in SHIPPED_KNOWN and all(pyc.source == 0 for pyc in stale):
            raise KnownFailure(message)
        pytest.fail(message, pytrace=False)
