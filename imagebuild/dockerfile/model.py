"""The parsed form of a Dockerfile: instructions, heredocs, stages.

Arguments are kept raw (quotes, escapes and ``$VAR`` references untouched): docker expands
variables when it builds, with the environment of the step, so that is the builder's job
(see :mod:`imagebuild.dockerfile.expand`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_ESCAPE = "\\"


@dataclass(frozen=True, kw_only=True)
class Heredoc:
    """A here-document attached to RUN, COPY or ADD (``<<EOF`` ... ``EOF``).

    ``content`` holds every body line with its newline. With ``chomp_tabs`` (``<<-EOF``) the
    leading tabs of each line are already removed. ``expand`` is false when the delimiter was
    quoted (``<<"EOF"``, ``<<'EOF'``): the body is then used without variable expansion.
    ``fd`` is the file descriptor written before ``<<`` (``3<<EOF``), or None.
    """

    name: str
    content: str
    chomp_tabs: bool = False
    expand: bool = True
    fd: int | None = None


@dataclass(frozen=True, kw_only=True)
class KeyValue:
    """One ``key=value`` of ENV, LABEL or ARG, both raw (unexpanded, quotes kept).

    ``value`` is None only for an ARG declared without a default (``ARG name``).
    """

    key: str
    value: str | None


@dataclass(frozen=True, kw_only=True)
class Instruction:
    """One instruction, continuation lines joined.

    ``args`` depends on the instruction:

    - RUN, CMD, ENTRYPOINT: ``list[str]`` in exec (JSON) form, else the shell command as ``str``;
    - SHELL: ``list[str]`` (always JSON);
    - COPY, ADD, VOLUME: ``list[str]`` from the JSON array or split at whitespace;
    - FROM, EXPOSE: ``list[str]`` split at whitespace (FROM: ``[image]`` or ``[image, "AS", name]``);
    - ENV, LABEL, ARG: ``list[str]`` of the raw words; the split form is in ``pairs``;
    - WORKDIR, USER, STOPSIGNAL, MAINTAINER: the whole argument text as ``str``;
    - HEALTHCHECK: the image-config test form, ``["NONE"]``, ``["CMD", *argv]`` or
      ``["CMD-SHELL", command]``;
    - ONBUILD: the trigger's text as ``str``; the parsed trigger is ``trigger``.

    ``flags`` maps a flag name (without ``--``) to its value; boolean flags hold ``"true"`` or
    ``"false"``. A flag that may repeat (``--mount``, ``--exclude``) holds its last value there;
    :meth:`flag_values` gives all of them in order.
    """

    cmd: str
    args: list[str] | str
    line: int
    end_line: int
    original: str
    flags: dict[str, str] = field(default_factory=dict)
    json_form: bool = False
    heredocs: list[Heredoc] = field(default_factory=list)
    pairs: list[KeyValue] = field(default_factory=list)
    flag_list: list[tuple[str, str]] = field(default_factory=list)
    trigger: Instruction | None = None

    def flag_values(self, name: str) -> list[str]:
        """Every value given for flag ``name``, in the order written."""
        return [value for key, value in self.flag_list if key == name]


@dataclass(frozen=True, kw_only=True)
class Stage:
    """A build stage: its FROM and the instructions up to the next FROM.

    ``name`` is lower-cased, as docker compares stage names case-insensitively. ``base`` and
    ``platform`` are raw and may still hold ``$VAR`` references to meta ARGs.
    """

    name: str | None
    base: str
    index: int
    instructions: list[Instruction]
    line: int
    platform: str | None = None
    from_instruction: Instruction | None = None


@dataclass(frozen=True, kw_only=True)
class Dockerfile:
    """A whole parsed Dockerfile."""

    path: str
    directives: dict[str, str]
    meta_args: list[Instruction]
    stages: list[Stage]
    instructions: list[Instruction]

    @property
    def escape(self) -> str:
        """The escape character in effect (``\\`` unless ``# escape=`` chose a backtick)."""
        return self.directives.get("escape", DEFAULT_ESCAPE)

    def stage(self, name_or_index: str | int) -> Stage:
        """The stage named (case-insensitively) or numbered ``name_or_index``.

        A string of digits that names no stage is taken as an index, as ``--from=1`` is.
        Raises KeyError for an unknown name and IndexError for an index out of range.
        """
        if isinstance(name_or_index, str):
            wanted = name_or_index.lower()
            for stage in self.stages:
                if stage.name == wanted:
                    return stage
            if not name_or_index.isdecimal():
                raise KeyError(f"no stage named {name_or_index!r}")
            name_or_index = int(name_or_index)
        if not 0 <= name_or_index < len(self.stages):
            raise IndexError(f"no stage {name_or_index} (the file has {len(self.stages)})")
        return self.stages[name_or_index]
