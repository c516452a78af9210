"""Path leases: a directory rename that copies a tree holds off every change at, in or above its names, and
nothing else."""

from __future__ import annotations

import trio
import trio.testing

from unionfs.pathlocks import Path, PathLocks, conflict


def test_paths_conflict_when_one_lies_in_the_other() -> None:
    assert conflict(("a", "b"), ("a", "b"))
    assert conflict(("a",), ("a", "b", "c"))  # a change above, or inside
    assert conflict(("a", "b", "c"), ("a",))
    assert conflict((), ("a",))  # the root is above everything
    assert not conflict(("a", "b"), ("a", "c"))  # siblings
    assert not conflict(("a",), ("ab",))  # names, not strings


def run(scenario: list[tuple[str, str, Path]]) -> list[str]:
    """Start each (kind, name, path) request in order, each holding its lease until released; then release
    them in order, recording when each got its lease."""
    got: list[str] = []

    async def main() -> None:
        locks = PathLocks()
        releases = {name: trio.Event() for _, name, _ in scenario}

        async def request(kind: str, name: str, path: Path) -> None:
            if kind == "settle":
                await locks.settle(path)
                got.append(name)
                return
            async with (locks.exclusive if kind == "exclusive" else locks.shared)(path):
                got.append(name)
                await releases[name].wait()

        async with trio.open_nursery() as nursery:
            for kind, name, path in scenario:
                nursery.start_soon(request, kind, name, path)
                await trio.testing.wait_all_tasks_blocked()
            got.append("|")  # what held its lease before anything was released
            for _, name, _ in scenario:
                releases[name].set()
                await trio.testing.wait_all_tasks_blocked()
        assert locks.idle()

    trio.run(main)
    return got


def test_an_exclusive_lease_waits_for_changes_under_way_inside_it_and_new_ones_queue_behind() -> None:
    got = run(
        [
            ("shared", "write inside", ("tree", "file")),
            ("exclusive", "rename tree", ("tree",)),
            ("shared", "write inside later", ("tree", "other")),
            ("settle", "create inside", ("tree", "new")),
            ("shared", "write elsewhere", ("dir", "file")),
            ("settle", "create beside", ("sibling",)),
        ]
    )
    assert got[: got.index("|")] == ["write inside", "write elsewhere", "create beside"]
    after = got[got.index("|") + 1 :]
    assert after.index("rename tree") < after.index("write inside later")
    assert after.index("rename tree") < after.index("create inside")


def test_exclusive_leases_over_one_another_take_turns_and_apart_run_together() -> None:
    got = run(
        [
            ("exclusive", "rename a/b", ("a", "b")),
            ("exclusive", "rename a", ("a",)),
            ("exclusive", "rename c", ("c",)),
        ]
    )
    assert got == ["rename a/b", "rename c", "|", "rename a"]
