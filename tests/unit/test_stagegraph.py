"""The stage graph: which earlier stages a stage reads (FROM, COPY/ADD --from, RUN --mount from=), and which
stages a target needs; and the output console that keeps each step's lines one block."""

from __future__ import annotations

import io

from imagebuild.builder.console import Console, StageOutput
from imagebuild.builder.stagegraph import StageGraph, references, stage_names
from imagebuild.dockerfile import parse

FILE = """\
FROM busybox AS base
RUN true
FROM base AS a
RUN true
FROM busybox AS B
COPY --from=0 /x /x
FROM busybox AS unused
RUN true
FROM busybox AS mounts
RUN --mount=type=bind,from=a,source=/,target=/a --mount=type=cache,target=/c true
FROM scratch
COPY --from=b /x /x
COPY --from=mounts /y /y
COPY --from=busybox:1.35 /bin/sh /sh
FROM busybox AS later
"""


def graph() -> StageGraph:
    df = parse(FILE)
    return StageGraph.of(df.stages, [s.base for s in df.stages])


def test_each_kind_of_reference_is_an_edge_to_an_earlier_stage() -> None:
    deps = graph().deps
    assert deps[0] == frozenset()  # busybox is an image
    assert deps[1] == {0}  # FROM base
    assert deps[2] == {0}  # COPY --from=0, by number
    assert deps[4] == {1}  # RUN --mount from=a
    assert deps[5] == {2, 4}  # --from names case-insensitively; an image is no edge
    assert deps[6] == frozenset()


def test_a_target_needs_what_it_reads_through_others_and_nothing_else() -> None:
    g = graph()
    assert g.needed(5) == {0, 1, 2, 4, 5}  # not 'unused' (3) nor 'later' (6)
    assert g.needed(1) == {0, 1}
    assert g.needed(3) == {3}


def test_ready_stages_come_in_dockerfile_order_once_their_dependencies_are_done() -> None:
    g = graph()
    wanted = g.needed(5)
    assert g.ready(set(), set(), wanted) == [0]
    assert g.ready({0}, {0}, wanted) == [1, 2]
    assert g.ready({0, 1}, {0, 1, 2}, wanted) == [4]
    assert g.ready({0, 1, 2, 4}, {0, 1, 2, 4}, wanted) == [5]


def test_references_reads_mount_fields_in_any_order_and_case() -> None:
    df = parse('FROM x\nRUN --mount=FROM="st",type=bind,target=/t true\nCOPY --from=a /s /d\n')
    run, copy = df.stages[0].instructions
    assert references(run) == ["st"]
    assert references(copy) == ["a"]


def test_stage_names_finds_a_built_stage_by_number_and_name() -> None:
    df = parse(FILE)
    assert stage_names(df.stages, {0: "x", 2: "y"}) == {"0": "x", "base": "x", "2": "y", "b": "y"}


def test_each_steps_lines_stay_one_block_while_another_step_is_live() -> None:
    out = io.StringIO()
    console = Console(out)
    one, two = StageOutput(console), StageOutput(console)
    one.step()
    one.write("Step 1\n")
    two.step()
    two.write("Step 2\n")
    one.write("one a\n")  # the live step streams
    assert out.getvalue() == "Step 1\none a\n"
    two.write("two a\n")
    two.close()  # ended while step 1 is live: held whole
    one.write("one b\n")
    one.step()  # step 1 ends: step 2's block, then the next step (live now)
    one.write("Step 3\n")
    assert out.getvalue() == "Step 1\none a\none b\nStep 2\ntwo a\nStep 3\n"


def test_a_running_step_becomes_live_with_what_it_has_so_far() -> None:
    out = io.StringIO()
    console = Console(out)
    one, two = StageOutput(console), StageOutput(console)
    one.write("Step 1\n")
    two.write("Step 2\n")
    two.write("two a\n")
    one.close()
    assert out.getvalue() == "Step 1\nStep 2\ntwo a\n"
    two.write("two b\n")
    console.say("a line of its own")  # waits for the live step
    assert out.getvalue().endswith("two b\n")
    two.close()
    assert out.getvalue().endswith("two b\na line of its own\n")
