"""Dockerfile text to a :class:`Dockerfile`: directives, instructions with heredocs, stages.

Pure: no expansion of variables (the builder does that per step, see :mod:`.expand`) and no
file access except :func:`parse_file`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from .directives import DirectiveError, escape_of, read_directives
from .errors import DockerfileError, InstructionError
from .heredoc import chomp_tabs, find_heredocs
from .instructions import can_have_heredocs, parse_instruction
from .lines import LineReader, LogicalLine, split_lines
from .model import Dockerfile, Heredoc, Instruction, Stage


def parse(text: str, path: str = "Dockerfile") -> Dockerfile:
    """Parse a Dockerfile's text; ``path`` only names it in errors.

    Raises :class:`DockerfileError` for the first problem found, with its line.
    """
    lines = split_lines(text)
    try:
        directives = read_directives(lines)
    except DirectiveError as err:
        raise DockerfileError(path, err.line, err.message) from None
    reader = LineReader(lines, escape_of(directives))
    instructions = _read_instructions(reader, path, escape_of(directives))
    if not instructions:
        raise DockerfileError(path, max(1, reader.last_line), "file with no instructions")
    meta_args, stages = _build_stages(instructions, path)
    _check_copy_sources(stages, path)
    return Dockerfile(
        path=path,
        directives=directives,
        meta_args=meta_args,
        stages=stages,
        instructions=instructions,
    )


def parse_file(path: str | os.PathLike[str]) -> Dockerfile:
    """Read ``path`` (UTF-8) and parse it."""
    with open(path, "rb") as file:
        data = file.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DockerfileError(
            os.fspath(path), line, f"not UTF-8 text (byte 0x{data[exc.start]:02x}): save the Dockerfile as UTF-8"
        ) from None
    return parse(text.replace("\r\n", "\n").replace("\r", "\n"), os.fspath(path))


def _read_instructions(reader: LineReader, path: str, escape: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    while (logical := reader.next_logical()) is not None:
        instructions.append(_read_instruction(reader, logical, path, escape))
    return instructions


def _read_instruction(reader: LineReader, logical: LogicalLine, path: str, escape: str) -> Instruction:
    """Parse one logical line and read the bodies of the heredocs it announces."""
    try:
        instruction = parse_instruction(logical.text, logical.line, logical.end_line, escape)
    except InstructionError as err:
        raise DockerfileError(path, logical.line, err.message) from None
    if not can_have_heredocs(instruction):
        return instruction
    heredocs: list[Heredoc] = []
    for mark in find_heredocs(logical.text):
        body = reader.heredoc_body(mark.name, mark.chomp_tabs)
        if body is None:
            message = f"unterminated heredoc <<{mark.name}: no line '{mark.name}' before the end of the file"
            raise DockerfileError(path, logical.line, message)
        content = chomp_tabs(body) if mark.chomp_tabs else body
        heredocs.append(
            Heredoc(name=mark.name, content=content, chomp_tabs=mark.chomp_tabs, expand=mark.expand, fd=mark.fd)
        )
    if not heredocs:
        return instruction
    return _with_heredocs(instruction, heredocs, reader.last_line)


def _with_heredocs(instruction: Instruction, heredocs: list[Heredoc], end_line: int) -> Instruction:
    """The instruction (and its ONBUILD trigger) carrying the heredocs, ending after them."""
    trigger = instruction.trigger
    if trigger is not None:
        trigger = dataclasses.replace(trigger, heredocs=heredocs, end_line=end_line)
    return dataclasses.replace(instruction, heredocs=heredocs, end_line=end_line, trigger=trigger)


@dataclass
class _StageDraft:
    start: Instruction
    index: int
    body: list[Instruction] = field(default_factory=list)

    def finish(self) -> Stage:
        args = self.start.args
        name = args[2].lower() if len(args) == 3 else None
        return Stage(
            name=name,
            base=args[0],
            index=self.index,
            instructions=self.body,
            line=self.start.line,
            platform=self.start.flags.get("platform"),
            from_instruction=self.start,
        )


def _build_stages(instructions: list[Instruction], path: str) -> tuple[list[Instruction], list[Stage]]:
    """Split the instructions into meta ARGs and stages; check FROM comes first and names repeat not."""
    meta_args: list[Instruction] = []
    drafts: list[_StageDraft] = []
    for instruction in instructions:
        if instruction.cmd == "FROM":
            drafts.append(_StageDraft(instruction, len(drafts)))
        elif drafts:
            drafts[-1].body.append(instruction)
        elif instruction.cmd == "ARG":
            meta_args.append(instruction)
        else:
            message = f"the first instruction must be FROM (only ARG may come before it), not {instruction.cmd}"
            raise DockerfileError(path, instruction.line, message)
    if not drafts:
        message = "no FROM instruction: the file has only ARG instructions and no stage to build"
        raise DockerfileError(path, instructions[0].line, message)
    stages = [draft.finish() for draft in drafts]
    _check_stage_names(stages, path)
    return meta_args, stages


def _check_stage_names(stages: list[Stage], path: str) -> None:
    seen: dict[str, Stage] = {}
    for stage in stages:
        if stage.name is None:
            continue
        first = seen.get(stage.name)
        if first is not None:
            message = f"duplicate stage name '{stage.name}' (first defined on line {first.line})"
            raise DockerfileError(path, stage.line, message)
        seen[stage.name] = stage


def _check_copy_sources(stages: list[Stage], path: str) -> None:
    """``COPY --from`` may name only an earlier stage (or an image); never this or a later one.

    A value holding ``$`` is left alone: it names something only the build can expand.
    """
    by_name = {stage.name: stage for stage in stages if stage.name is not None}
    for stage in stages:
        for instruction in stage.instructions:
            source = instruction.flags.get("from") if instruction.cmd == "COPY" else None
            if source is None or "$" in source:
                continue
            target = by_name.get(source.lower())
            if target is None and source.isdecimal():
                target = stages[int(source)] if int(source) < len(stages) else None
                if target is None:
                    message = f"COPY --from={source}: there is no stage {source} (stages are 0 to {len(stages) - 1})"
                    raise DockerfileError(path, instruction.line, message)
            if target is not None and target.index >= stage.index:
                raise DockerfileError(path, instruction.line, _from_message(source, target, stage))


def _from_message(source: str, target: Stage, stage: Stage) -> str:
    if target.index == stage.index:
        return f"COPY --from={source} refers to the stage it is in (circular dependency)"
    return (
        f"COPY --from={source} refers to stage {target.index} (line {target.line}), which comes later; "
        "a stage can only copy from the stages before it"
    )
