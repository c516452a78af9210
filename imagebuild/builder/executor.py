"""The build executor: walks a parsed Dockerfile stage by stage and makes one layer per RUN, COPY and ADD.

A RUN step runs on a union mount of the layers so far with a fresh upper; that upper, once unmounted, is the new
layer. COPY and ADD write straight into a fresh layer directory. Every other instruction changes the config.
A step is reused from the cache when the steps before it, its own text and (COPY/ADD) the content of its
sources match; mtimes never count. A layer keeps its files' mtimes (whole seconds, in its directory as in its
tar); with SOURCE_DATE_EPOCH (`epoch`) those newer than it are clamped to it, RUN steps see it in their
environment and the config's dates are the epoch, not the build's time, so a rebuild of steps whose output does
not depend on when they run gives the same image digest.
"""

from __future__ import annotations

import copy
import os
import platform

from imagebuild import transport
from imagebuild.builder import runmounts
from imagebuild.builder.configsteps import ConfigSteps
from imagebuild.builder.console import Console, StageOutput
from imagebuild.builder.copyplan import CopySteps
from imagebuild.builder.runstep import RunStep
from imagebuild.builder.scheduler import Cancelled, default_jobs, run_stages
from imagebuild.builder.stagegraph import StageGraph, stage_label, stage_names
from imagebuild.builder.state import StageState, sha
from imagebuild.builder.stepbase import Options, StepReport, looks_remote
from imagebuild.dockerfile import Instruction, Stage, parse
from imagebuild.errors import BuildError
from imagebuild.oci import ImageConfig, RootFS
from imagebuild.store.images import cached_layer
from imagebuild.store.layerblobs import LocalLayer

__all__ = ["Builder", "Options", "StepReport"]

LAYER_STEPS = frozenset({"RUN", "COPY", "ADD"})


class Builder(ConfigSteps, RunStep, CopySteps):
    """Builds a Dockerfile: stage selection, one handler per instruction (the config steps, RUN, COPY/ADD),
    the cache of layer steps, the commit of the image."""

    _numbers: dict[int, int]  # id of an instruction -> its step number (Dockerfile order, the built stages only)
    _eager = False  # the stage the image is made of: its layers are compressed in the background as they are made

    def _target(self) -> Stage:
        """The stage the image is made of: --target, else the last."""
        stages = self.df.stages
        if self.options.target is None:
            return stages[-1]
        try:
            return self.df.stage(self.options.target)
        except (KeyError, IndexError, ValueError):
            names = ", ".join(s.name for s in stages if s.name) or "none named"
            raise BuildError(f"{self.df.path}: no stage '{self.options.target}' to target (stages: {names})") from None

    def build(self) -> tuple[str, StageState]:
        """Build the stages the target needs, each as soon as the stages it reads are built (several at once,
        see scheduler.py), and commit the target's image. Stages the target does not need are skipped."""
        stages = self.df.stages
        target = self._target()
        graph = StageGraph.of(stages, [self._base_name(stage) for stage in stages])
        wanted = graph.needed(target.index)
        console = Console(self.out)
        for stage in stages:
            if stage.index not in wanted:
                console.say(f"Skipping {stage_label(stage)}: {stage_label(target)} does not need it")
        self._numbers = {}
        for stage in (s for s in stages if s.index in wanted):
            for instruction in (stage.from_instruction, *stage.instructions):
                self._numbers[id(instruction)] = len(self._numbers) + 1
        self._total = len(self._numbers)
        built: dict[int, StageState] = {}
        jobs = self.options.jobs or default_jobs()

        def build_stage(index: int) -> None:
            worker = copy.copy(self)  # the store, options, reports and cancel shared; the output and step its own
            worker.out = StageOutput(console)
            worker.stages = stage_names(stages, {i: built[i] for i in graph.deps[index]})
            worker._eager = index == target.index
            try:
                built[index] = worker._build_stage(stages[index])
            except Cancelled:
                worker._say(f" ---> cancelled: {self.cancel.reason}")
                raise
            finally:
                worker.out.close()

        try:
            run_stages(graph, wanted, build_stage, jobs, self.cancel)
            self.stages.update(stage_names(stages, dict(sorted(built.items()))))  # Dockerfile order, as --cache-to
            self.reports.sort(key=lambda report: report.number)
            state = built[target.index]
            return self._commit(state), state
        except BaseException:
            self.store.layer_blobs.close()  # a failed build (or commit) waits for no blob
            raise

    def _base_name(self, stage: Stage) -> str:
        assert stage.from_instruction is not None, "the parser gives every stage its FROM"
        return self._expand(stage.from_instruction, stage.base, self.meta)

    def _begin(self, instruction: Instruction) -> int:
        self.cancel.check()
        self._step = self._numbers[id(instruction)]
        if isinstance(self.out, StageOutput):
            self.out.step()
        self._say(f"Step {self._step}/{self._total} : {instruction.original}")
        return self._step

    def _build_stage(self, stage: Stage) -> StageState:
        from_instruction = stage.from_instruction
        assert from_instruction is not None, "the parser gives every stage its FROM"
        self._begin(from_instruction)
        base = self._base_name(stage)
        state = self._base_state(from_instruction, base)
        state.advance("FROM", base)
        if self._eager:  # an earlier stage's layers this image holds: compressed while this stage builds
            for layer in state.layers:
                if isinstance(layer, LocalLayer):
                    self.store.layer_blobs.background(layer)
        self.reports.append(StepReport(self._step, from_instruction.original, None, f"base {base}"))
        for trigger in state.config.on_build:  # the base image's ONBUILD triggers run first
            self._apply(parse(f"FROM scratch\n{trigger}\n", self.df.path).stages[0].instructions[0], state)
        state.config.on_build = []
        for instruction in stage.instructions:
            self._begin(instruction)
            self._apply(instruction, state)
        return state

    def _base_state(self, instruction: Instruction, base: str) -> StageState:
        if base == "scratch":
            return StageState.from_image(None)
        earlier = self.stages.get(base.lower())
        if earlier is not None:
            return copy.deepcopy(earlier)
        layout = base.removeprefix("oci:")
        if os.path.isfile(os.path.join(layout.split(":")[0], "oci-layout")):
            path, _, ref = layout.partition(":")
            self._say(f" ---> importing the OCI layout {path}")
            image_id = transport.import_oci_layout(self.store, path, ref or None, [])
            return StageState.from_image(self.store.resolve(image_id))
        try:
            image = self.store.resolve(base)
        except BuildError as exc:
            if not looks_remote(base):
                raise BuildError(f"{self.df.path}:{instruction.line}: {exc}") from None
            image = self._pull(instruction, base)
        state = StageState.from_image(image)
        state.config.on_build = list(image.config.config.on_build)
        return state

    def _apply(self, instruction: Instruction, state: StageState) -> None:
        cmd = instruction.cmd
        if cmd in LAYER_STEPS:
            if self.options.no_cache:
                self._layer_step(instruction, state)
            else:  # the same step in two stages at once: the second waits, then reuses the first's layer
                with self._same_steps.hold(sha(state.key, instruction.original)):
                    self.cancel.check()  # it may have waited for a stage that failed
                    self._layer_step(instruction, state)
            return
        handler = getattr(self, f"_do_{cmd.lower()}", None)
        if handler is None:
            raise BuildError(f"{self._where(instruction)}: {cmd} is not supported by this builder yet")
        handler(instruction, state)
        state.advance(cmd, instruction.original, repr(sorted(state.args.items())))
        self._history(state, instruction, empty=True)
        self.reports.append(StepReport(self._step, instruction.original, None, "config only"))

    def _layer_step(self, instruction: Instruction, state: StageState) -> None:
        epoch = ("SOURCE_DATE_EPOCH", self.options.epoch)  # it changes the layer (mtimes, RUN's environment)
        if instruction.cmd == "RUN":
            argv = self._command(instruction, state)
            mounts = self._mounts(instruction, state)
            text = repr(
                ("RUN", argv, sorted(state.env.items()), sorted(state.args.items()), state.config.working_dir, epoch)
                + ((mounts.key,) if mounts.key else ())
            )
            files: dict[str, str] = {}
            content = ""
            plan = None
        else:
            plan = self._copy_plan(instruction, state)
            files, content = plan.files, plan.content
            flags = sorted(instruction.flags.items())
            text = repr(
                (instruction.cmd, plan.request.sources, plan.request.dest, flags, state.config.working_dir, epoch)
            )
        step_id = sha(state.key, text)
        key = sha(step_id, content)
        entry = None if self.options.no_cache else self.store.cache_get(key)
        if entry is None and not self.options.no_cache and self.options.cache_from is not None:
            entry = self.options.cache_from(key)
        if entry is not None:
            layer = cached_layer(entry)
            if self._eager and isinstance(layer, LocalLayer):
                self.store.layer_blobs.background(layer)
            created = str(entry.get("created") or self._created())
            why = "same steps before it, same instruction" + (f", same content of {len(files)} files" if files else "")
            self._say(f" ---> Using cache {layer.diff_id[7:19]}")
        else:
            why = self._why_missed(step_id, files)
            layer_dir = self._run(instruction, state, mounts) if plan is None else self._copy(instruction, state, plan)
            layer = self.store.capture_layer(layer_dir, self.options.epoch, background=self._eager)
            created = self._created()
            self.store.cache_put(key, {"diff_id": layer.diff_id, "epoch": self.options.epoch, "created": created})
            self._say(f" ---> {layer.diff_id[7:19]}")
        if plan is not None and plan.urls is not None:
            plan.urls.close()
        self.store.step_put(step_id, {"files": files})
        if self.options.explain:
            self._say(f" ---> cache {'hit' if entry is not None else 'miss'}: {why}")
        self.reports.append(StepReport(self._step, instruction.original, entry is not None, why))
        state.layers.append(layer)
        state.steps.append((key, layer, created))
        state.key = key
        state.created = created
        self._history(state, instruction, empty=False)

    def _mounts(self, instruction: Instruction, state: StageState) -> runmounts.Plan:
        return runmounts.plan(
            self._where(instruction),
            instruction.flag_values("mount"),
            lambda value: self._expand(instruction, value, state.scope),
            self.context,
            lambda name: self._source_state(instruction, name),
        )

    def _why_missed(self, step_id: str, files: dict[str, str]) -> str:
        if self.options.no_cache:
            return "--no-cache"
        seen = self.store.step_get(step_id)
        if seen is None:
            return "not built before after these same steps (it or a step before it is new or changed)"
        before: dict[str, str] = seen.get("files", {})
        changed = sorted(n for n in files if n in before and before[n] != files[n])
        added = sorted(n for n in files if n not in before)
        removed = sorted(n for n in before if n not in files)
        parts = []
        for label, names in (("changed", changed), ("added", added), ("removed", removed)):
            if names:
                parts.append(
                    f"{label}: {', '.join(names[:5])}" + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
                )
        return "; ".join(parts) or "its layer is no longer in the store (pruned)"

    def _commit(self, state: StageState) -> str:
        machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        config = ImageConfig(
            architecture=machine,
            os="linux",
            rootfs=RootFS(diff_ids=[layer.diff_id for layer in state.layers]),
            config=state.config,
            history=state.history,
            created=self._created(state),
        )
        return self.store.commit(config, state.layers)
