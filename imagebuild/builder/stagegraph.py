"""The stage graph of a multi-stage Dockerfile: which earlier stages each stage reads, and which stages a target
needs. Pure: no store, no threads, no output.

A stage depends on an earlier stage it names (case-insensitively) or numbers in
- its FROM (the base, meta ARGs already expanded),
- `COPY --from=` / `ADD --from=`,
- `RUN --mount=...,from=` (bind and cache mounts read from a stage).
`references` is the one place that knows where an instruction names a stage: a new kind of reference is added
there. A name that is no earlier stage is an image (or a later stage, which docker does not let a stage read):
no edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from imagebuild.dockerfile import Instruction, Stage

T = TypeVar("T")


def references(instruction: Instruction) -> list[str]:
    """The names (or numbers) of stages or images an instruction reads from, besides the context."""
    found: list[str] = []
    if instruction.cmd in ("COPY", "ADD"):
        found += instruction.flag_values("from")
    if instruction.cmd == "RUN":
        for mount in instruction.flag_values("mount"):
            for field in mount.split(","):
                key, _, value = field.strip().partition("=")
                if key.strip().lower() == "from" and value:
                    found.append(value.strip().strip("\"'"))
    return found


def resolve(stages: Sequence[Stage], name: str, before: int) -> int | None:
    """The index of the stage among the first `before` that `name` names (its name, else its number), or None."""
    wanted = name.lower()
    for stage in stages[:before]:
        if stage.name == wanted:
            return stage.index
    if wanted.isdecimal() and int(wanted) < before:
        return int(wanted)
    return None


@dataclass(frozen=True)
class StageGraph:
    """deps[i]: the indexes of the earlier stages stage i reads."""

    deps: tuple[frozenset[int], ...]

    @classmethod
    def of(cls, stages: Sequence[Stage], bases: Sequence[str]) -> StageGraph:
        """The graph of `stages`; `bases[i]` is stage i's FROM with meta ARGs expanded."""
        deps: list[frozenset[int]] = []
        for stage, base in zip(stages, bases, strict=True):
            names = [base, *(name for instruction in stage.instructions for name in references(instruction))]
            found = {resolve(stages, name, stage.index) for name in names}
            deps.append(frozenset(i for i in found if i is not None))
        return cls(tuple(deps))

    def needed(self, target: int) -> frozenset[int]:
        """The stages `target` needs: itself and every stage it reads, directly or through others."""
        seen: set[int] = set()
        todo = [target]
        while todo:
            index = todo.pop()
            if index not in seen:
                seen.add(index)
                todo.extend(self.deps[index])
        return frozenset(seen)

    def ready(self, done: set[int] | frozenset[int], started: set[int], wanted: frozenset[int]) -> list[int]:
        """The wanted stages not started yet whose dependencies are all done, lowest index (Dockerfile order) first."""
        return [i for i in sorted(wanted) if i not in started and self.deps[i] <= done]


def stage_label(stage: Stage) -> str:
    """How the output names a stage: `stage 'build' (1)`, or `stage 1` when it has no name."""
    return f"stage '{stage.name}' ({stage.index})" if stage.name else f"stage {stage.index}"


def stage_names(stages: Sequence[Stage], built: dict[int, T]) -> dict[str, T]:
    """What the built stages are found by: their number (as text) and their name."""
    found: dict[str, T] = {}
    for index, value in built.items():
        found[str(index)] = value
        if stages[index].name:
            found[str(stages[index].name)] = value
    return found
