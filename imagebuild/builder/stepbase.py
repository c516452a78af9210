"""What every step of a build reads and the helpers they share: the store, the context, the Dockerfile, the
options and the output; where an instruction is, variable expansion, the argv of RUN/CMD/ENTRYPOINT, the dates
of the config and its history, pulling a base from a registry.
"""

from __future__ import annotations

import datetime
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imagebuild.builder.console import Stream
from imagebuild.builder.scheduler import Cancel, KeyedLocks
from imagebuild.builder.state import StageState
from imagebuild.context import Context
from imagebuild.dockerfile import Dockerfile, ExpansionError, Instruction, expand, expand_words
from imagebuild.errors import BuildError
from imagebuild.oci import History
from imagebuild.store.images import Image, Store
from imagebuild.transport import registry


@dataclass
class Options:
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    explain: bool = False
    epoch: int | None = None  # SOURCE_DATE_EPOCH: clamps layer mtimes and dates the config; None: build time
    insecure: bool = False  # FROM, --cache-from and --cache-to over plain http
    progress: Callable[[str], None] | None = None  # told a FROM pull's progress, line by line
    jobs: int | None = None  # stages built at once; None: scheduler.default_jobs()
    secrets: dict[str, bytes] = field(default_factory=dict)  # --secret, by id: for RUN --mount=type=secret
    cache_from: Callable[[str], dict[str, Any] | None] | None = None  # --cache-from: a key's entry, when cached there
    run_fs: str = "auto"  # --run-fs: what RUN steps run on as root: auto, overlay (the kernel's) or unionfs


@dataclass
class StepReport:
    number: int
    text: str
    cached: bool | None  # None: a config-only step
    why: str


class StepBase:
    """A build's inputs and progress, and the helpers every step handler uses."""

    def __init__(self, store: Store, context: Context, dockerfile: Dockerfile, options: Options, out: Stream) -> None:
        self.store = store
        self.context = context
        self.df = dockerfile
        self.options = options
        self.out = out
        self.stages: dict[str, StageState] = {}
        self.reports: list[StepReport] = []
        self.meta = self._meta_args()
        self._step = 0
        self._total = 0
        self.cancel = Cancel()  # set when a stage fails: the other stages stop (scheduler.py)
        self._kernel_refused: str | None = None  # why kernel overlayfs is not used for RUN (runstep.py)
        self._refusal_lock = threading.Lock()
        self._same_steps = KeyedLocks()  # identical steps of stages running at once: one runs, the other reuses it

    def _meta_args(self) -> dict[str, str]:
        scope: dict[str, str] = {}
        for instruction in self.df.meta_args:
            for pair in instruction.pairs:
                if pair.key in self.options.build_args:
                    scope[pair.key] = self.options.build_args[pair.key]
                elif pair.value is not None:
                    scope[pair.key] = self._expand(instruction, pair.value, scope)
        return scope

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _pull(self, instruction: Instruction, base: str) -> Image:
        ref = registry.Reference.parse(base)
        self._say(f" ---> pulling {ref}")
        try:
            client = registry.Client(ref.registry, insecure=self.options.insecure, progress=self.options.progress)
            return self.store.resolve(registry.pull(self.store, ref, client, []))
        except BuildError as exc:
            raise BuildError(f"{self._where(instruction)}: {exc}") from None

    def _where(self, instruction: Instruction) -> str:
        return f"{self.df.path}:{instruction.line}"

    def _expand(self, instruction: Instruction, word: str, scope: dict[str, str]) -> str:
        try:
            return expand(word, scope, self.df.escape)
        except ExpansionError as exc:
            raise BuildError(f"{self._where(instruction)}: {exc.message}") from None

    def _words(self, instruction: Instruction, state: StageState) -> list[str]:
        args = instruction.args
        if isinstance(args, str):
            try:
                return expand_words(args, state.scope, self.df.escape)
            except ExpansionError as exc:
                raise BuildError(f"{self._where(instruction)}: {exc.message}") from None
        return [self._expand(instruction, a, state.scope) for a in args]

    def _history(self, state: StageState, instruction: Instruction, empty: bool) -> None:
        state.history.append(
            History(
                created=self._created(state), created_by=instruction.original, comment="imagebuild", empty_layer=empty
            )
        )

    def _created(self, state: StageState | None = None) -> str:
        """A date for the config and its history: the epoch when one is set; else when the newest layer of `state`
        was made (a step the cache reuses keeps the date it was built, so a rebuild the cache serves whole keeps
        its image id), or now."""
        if self.options.epoch is not None:
            when = datetime.datetime.fromtimestamp(self.options.epoch, datetime.UTC)
        elif state is not None and state.created is not None:
            return state.created
        else:
            when = datetime.datetime.now(datetime.UTC)
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _command(self, instruction: Instruction, state: StageState) -> list[str]:
        """The argv of a RUN, CMD or ENTRYPOINT: exec form as given, shell form through SHELL."""
        if isinstance(instruction.args, list):
            return list(instruction.args)
        shell = state.config.shell or ["/bin/sh", "-c"]
        script = instruction.args
        if instruction.heredocs and re.fullmatch(r"\s*<<-?[\"']?\w+[\"']?\s*", script):
            return [*shell, instruction.heredocs[0].content]  # `RUN <<EOF`: the heredoc is the script
        for heredoc in instruction.heredocs:
            script += "\n" + heredoc.content + ("" if heredoc.content.endswith("\n") else "\n") + heredoc.name
        return [*shell, script]


def looks_remote(name: str) -> bool:
    """Whether an image name points at a registry (a host with a dot or a port, or localhost), as docker reads it."""
    first = name.split("/", 1)[0]
    return "/" in name and ("." in first or ":" in first or first == "localhost")
