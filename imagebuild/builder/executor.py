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

import contextlib
import copy
import dataclasses
import datetime
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from imagebuild import sandbox, transport, userns
from imagebuild.builder import addurl, copysource, copystep
from imagebuild.builder.copydest import CopyError
from imagebuild.builder.copyflags import parse_chmod
from imagebuild.builder.copysource import ContextTree
from imagebuild.builder.copystep import CopyRequest, SourceSide
from imagebuild.builder.layerview import LayersView
from imagebuild.builder.state import StageState, sha
from imagebuild.context import Context
from imagebuild.dockerfile import (
    Dockerfile,
    DockerfileError,
    ExpansionError,
    Instruction,
    Stage,
    expand,
    expand_words,
    parse,
    parse_duration_ns,
    parse_port_spec,
)
from imagebuild.errors import BuildError
from imagebuild.oci import Descriptor, Healthcheck, History, ImageConfig, RootFS
from imagebuild.store.images import Image, Layer, Store
from imagebuild.transport import registry
from unionfs.api import MountError, mounted

LAYER_STEPS = frozenset({"RUN", "COPY", "ADD"})
MOUNTPOINTS = ("dev", "proc", "sys", "etc")  # bubblewrap makes these in the rootfs; they are not the step's work


@dataclass
class Options:
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    explain: bool = False
    epoch: int | None = None  # SOURCE_DATE_EPOCH: clamps layer mtimes and dates the config; None: build time
    insecure: bool = False  # FROM a registry over plain http
    cache_from: Callable[[str], dict[str, Any] | None] | None = None  # --cache-from: a key's entry, when cached there


@dataclass(frozen=True)
class CopyPlan:
    """A COPY or ADD as the cache sees it: what it asks for, and the content of its sources."""

    request: CopyRequest
    files: dict[str, str]  # per-file digests, for --explain-cache
    content: str
    urls: addurl.Downloads | None = None  # ADD of URLs: what is (or will be) downloaded


@dataclass
class StepReport:
    number: int
    text: str
    cached: bool | None  # None: a config-only step
    why: str


class Builder:
    def __init__(self, store: Store, context: Context, dockerfile: Dockerfile, options: Options, out: TextIO) -> None:
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

    # -- driver ---------------------------------------------------------------------------------------------------

    def _meta_args(self) -> dict[str, str]:
        scope: dict[str, str] = {}
        for instruction in self.df.meta_args:
            for pair in instruction.pairs:
                if pair.key in self.options.build_args:
                    scope[pair.key] = self.options.build_args[pair.key]
                elif pair.value is not None:
                    scope[pair.key] = self._expand(instruction, pair.value, scope)
        return scope

    def _stages_to_build(self) -> list[Stage]:
        stages = self.df.stages
        if self.options.target is None:
            return stages
        try:
            target = self.df.stage(self.options.target)
        except (KeyError, IndexError, ValueError):
            names = ", ".join(s.name for s in stages if s.name) or "none named"
            raise BuildError(f"{self.df.path}: no stage '{self.options.target}' to target (stages: {names})") from None
        return stages[: target.index + 1]

    def build(self) -> tuple[str, StageState]:
        stages = self._stages_to_build()
        self._total = sum(1 + len(s.instructions) for s in stages)
        state = StageState()
        for stage in stages:
            state = self._build_stage(stage)
            self.stages[str(stage.index)] = state
            if stage.name:
                self.stages[stage.name.lower()] = state
        return self._commit(state), state

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _begin(self, instruction: Instruction) -> int:
        self._step += 1
        self._say(f"Step {self._step}/{self._total} : {instruction.original}")
        return self._step

    def _build_stage(self, stage: Stage) -> StageState:
        from_instruction = stage.from_instruction
        assert from_instruction is not None, "the parser gives every stage its FROM"
        self._begin(from_instruction)
        base = self._expand(from_instruction, stage.base, self.meta)
        state = self._base_state(from_instruction, base)
        state.advance("FROM", base)
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
            if not _looks_remote(base):
                raise BuildError(f"{self.df.path}:{instruction.line}: {exc}") from None
            image = self._pull(instruction, base)
        state = StageState.from_image(image)
        state.config.on_build = list(image.config.config.on_build)
        return state

    # -- helpers --------------------------------------------------------------------------------------------------

    def _pull(self, instruction: Instruction, base: str) -> Image:
        ref = registry.Reference.parse(base)
        self._say(f" ---> pulling {ref}")
        try:
            client = registry.Client(ref.registry, insecure=self.options.insecure)
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

    def _run_env(self, state: StageState) -> dict[str, str]:
        """A RUN step's environment: its ARGs and ENV, and SOURCE_DATE_EPOCH when the build has an epoch (so tools
        that honour it, Python's compileall among them, make output that does not depend on the build's time)."""
        env = {**state.args, **state.env}
        if self.options.epoch is not None:
            env["SOURCE_DATE_EPOCH"] = str(self.options.epoch)
        return env

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

    # -- instructions ---------------------------------------------------------------------------------------------

    def _apply(self, instruction: Instruction, state: StageState) -> None:
        cmd = instruction.cmd
        if cmd in LAYER_STEPS:
            self._layer_step(instruction, state)
            return
        handler = getattr(self, f"_do_{cmd.lower()}", None)
        if handler is None:
            raise BuildError(f"{self._where(instruction)}: {cmd} is not supported by this builder yet")
        handler(instruction, state)
        state.advance(cmd, instruction.original, repr(sorted(state.args.items())))
        self._history(state, instruction, empty=True)
        self.reports.append(StepReport(self._step, instruction.original, None, "config only"))

    def _do_arg(self, instruction: Instruction, state: StageState) -> None:
        for pair in instruction.pairs:
            if pair.key in self.options.build_args:
                state.args[pair.key] = self.options.build_args[pair.key]
            elif pair.value is not None:
                state.args[pair.key] = self._expand(instruction, pair.value, state.scope)
            elif pair.key in self.meta:
                state.args[pair.key] = self.meta[pair.key]

    def _do_env(self, instruction: Instruction, state: StageState) -> None:
        scope = state.scope
        for pair in instruction.pairs:
            state.set_env(pair.key, self._expand(instruction, pair.value or "", scope))

    def _do_label(self, instruction: Instruction, state: StageState) -> None:
        for pair in instruction.pairs:
            key = self._expand(instruction, pair.key, state.scope)
            state.config.labels[key] = self._expand(instruction, pair.value or "", state.scope)

    def _do_workdir(self, instruction: Instruction, state: StageState) -> None:
        path = self._expand(instruction, str(instruction.args), state.scope)
        state.config.working_dir = os.path.normpath(os.path.join(state.config.working_dir or "/", path))

    def _do_user(self, instruction: Instruction, state: StageState) -> None:
        state.config.user = self._expand(instruction, str(instruction.args), state.scope)

    def _do_expose(self, instruction: Instruction, state: StageState) -> None:
        for word in self._words(instruction, state):
            try:
                spec = parse_port_spec(word)
            except (ValueError, DockerfileError) as exc:
                raise BuildError(f"{self._where(instruction)}: {exc}") from None
            for port in range(spec.start, spec.end + 1):
                name = f"{port}/{spec.protocol}"
                if name not in state.config.exposed_ports:
                    state.config.exposed_ports.append(name)

    def _do_cmd(self, instruction: Instruction, state: StageState) -> None:
        state.config.cmd = self._command(instruction, state)

    def _do_entrypoint(self, instruction: Instruction, state: StageState) -> None:
        state.config.entrypoint = self._command(instruction, state)
        state.config.cmd = None  # as docker: an ENTRYPOINT resets the CMD it inherited

    def _do_volume(self, instruction: Instruction, state: StageState) -> None:
        for path in self._words(instruction, state):
            if path not in state.config.volumes:
                state.config.volumes.append(path)

    def _do_shell(self, instruction: Instruction, state: StageState) -> None:
        state.config.shell = list(instruction.args)

    def _do_stopsignal(self, instruction: Instruction, state: StageState) -> None:
        state.config.stop_signal = self._expand(instruction, str(instruction.args), state.scope)

    def _do_healthcheck(self, instruction: Instruction, state: StageState) -> None:
        flags = instruction.flags

        def duration(name: str) -> int | None:
            return parse_duration_ns(flags[name]) if name in flags else None

        state.config.healthcheck = Healthcheck(
            test=list(instruction.args),
            interval=duration("interval"),
            timeout=duration("timeout"),
            start_period=duration("start-period"),
            start_interval=duration("start-interval"),
            retries=int(flags["retries"]) if "retries" in flags else None,
        )

    def _do_onbuild(self, instruction: Instruction, state: StageState) -> None:
        state.config.on_build.append(str(instruction.args))

    def _do_maintainer(self, instruction: Instruction, state: StageState) -> None:
        state.config.labels["maintainer"] = str(instruction.args)

    # -- layer steps ----------------------------------------------------------------------------------------------

    def _layer_step(self, instruction: Instruction, state: StageState) -> None:
        epoch = ("SOURCE_DATE_EPOCH", self.options.epoch)  # it changes the layer (mtimes, RUN's environment)
        if instruction.cmd == "RUN":
            argv = self._command(instruction, state)
            text = repr(
                ("RUN", argv, sorted(state.env.items()), sorted(state.args.items()), state.config.working_dir, epoch)
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
            layer = Layer(entry["diff_id"], Descriptor.from_dict(entry["blob"]))
            created = str(entry.get("created") or self._created())
            why = "same steps before it, same instruction" + (f", same content of {len(files)} files" if files else "")
            self._say(f" ---> Using cache {layer.diff_id[7:19]}")
        else:
            why = self._why_missed(step_id, files)
            if plan is None:
                layer_dir = self._run(instruction, state)
            else:
                layer_dir = self._copy(instruction, state, plan)
            layer = self.store.add_layer(layer_dir, self.options.epoch)
            created = self._created()
            self.store.cache_put(key, {"diff_id": layer.diff_id, "blob": layer.blob.to_dict(), "created": created})
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

    # RUN

    def _lowers(self, state: StageState, empty: str) -> list[str]:
        return self.store.lower_dirs(state.layers) or [empty]

    def _run(self, instruction: Instruction, state: StageState) -> str:
        ranges = userns.ranges()
        upper = self.store.scratch_dir("upper-")
        work = self.store.scratch_dir("work-")
        mnt = sandbox.mountpoint(private=ranges is None)
        empty = self.store.scratch_dir("empty-")
        names = sandbox.names_dir()
        options = sandbox.union_options(state.config.user, namespace=ranges is not None)
        lowers = self._lowers(state, empty)
        namespace = None if ranges is None else userns.Namespace(*ranges)
        try:
            if namespace is not None:
                namespace.open()
            enter = [] if namespace is None else namespace.enter()
            with mounted(mnt, lowers, upper, work, options, enter=[] if namespace is None else namespace.daemon()):
                workdir = state.config.working_dir or "/"
                env = self._run_env(state)
                try:
                    if namespace is None:
                        os.makedirs(os.path.join(mnt, workdir.lstrip("/")), exist_ok=True)
                        user = sandbox.resolve_user(mnt, state.config.user)
                        binds = sandbox.name_files(names, lambda name: os.path.islink(os.path.join(mnt, name)))
                        sandbox.prepare(mnt, binds)
                    else:
                        namespace.makedirs(*(os.path.join(mnt, d.lstrip("/")) for d in (workdir, "dev", "proc", "etc")))
                        user = sandbox.resolve_user(mnt, state.config.user, namespace.read)
                        binds = sandbox.name_files(names, lambda name: namespace.is_link(os.path.join(mnt, name)))
                        namespace.create(*(os.path.join(mnt, target.lstrip("/")) for _, target in binds))
                except BuildError as exc:
                    raise BuildError(f"{self._where(instruction)}: {exc}") from None
                argv = self._command(instruction, state)
                command = [
                    *enter,
                    *sandbox.bwrap_command(mnt, argv, env, workdir, user, inside=bool(enter), binds=binds),
                ]
                status = self._stream(command, sandbox.preexec(mnt, user))
            if status != 0:
                why = f"{self._where(instruction)}: RUN failed with exit status {status}"
                if os.geteuid() != 0 and namespace is None:
                    why += f" ({userns.no_range_hint()})"
                raise BuildError(why, status)
            self._drop_mountpoints(upper, lowers)
            return upper
        except MountError as exc:
            raise BuildError(f"{self._where(instruction)}: cannot mount the layers for RUN: {exc}") from None
        except BaseException:
            shutil.rmtree(upper, ignore_errors=True)
            raise
        finally:
            if namespace is not None:
                namespace.close()
            for path in (work, empty, names):
                shutil.rmtree(path, ignore_errors=True)
            sandbox.remove_mountpoint(mnt)

    def _stream(self, command: list[str], preexec: Callable[[], None] | None = None) -> int:
        """Run the step's command, each line of its output shown under the step number."""
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=preexec
        )
        assert proc.stdout is not None
        for raw in proc.stdout:
            self._say(f"[{self._step}] {raw.decode(errors='replace').rstrip()}")
        return proc.wait()

    def _drop_mountpoints(self, upper: str, lowers: list[str]) -> None:
        for name in sandbox.NAME_FILES:  # the empty files the host's name files were bound on, where none was
            path = os.path.join(upper, name)
            if (
                os.path.isfile(path)
                and not os.path.islink(path)
                and os.path.getsize(path) == 0
                and not any(os.path.lexists(os.path.join(lo, name)) for lo in lowers)
            ):
                os.unlink(path)
        for name in MOUNTPOINTS:
            path = os.path.join(upper, name)
            if (
                os.path.isdir(path)
                and not os.listdir(path)
                and not any(os.path.lexists(os.path.join(lo, name)) for lo in lowers)
            ):
                os.rmdir(path)

    # COPY / ADD (the rules live in copystep and the modules it uses; here: the plan for the cache, the trees)

    def _copy_plan(self, instruction: Instruction, state: StageState) -> CopyPlan:
        words = self._words(instruction, state)
        flags = instruction.flags
        request = CopyRequest(
            cmd=instruction.cmd,
            sources=words[:-1],
            dest=words[-1] if words else "",
            workdir=state.config.working_dir or "/",
            chown=self._expand(instruction, flags["chown"], state.scope) if "chown" in flags else None,
            chmod=self._expand(instruction, flags["chmod"], state.scope) if "chmod" in flags else None,
            keep_owner="from" in flags,
        )
        try:
            if request.chmod is not None:
                parse_chmod(request.chmod)
        except CopyError as exc:
            raise BuildError(f"{self._where(instruction)}: {exc}") from None
        if instruction.heredocs:  # COPY <<EOF /path: each heredoc is a file with that content
            bodies = self._heredoc_files(instruction, state)
            request = dataclasses.replace(
                request, heredocs={n: b.encode("utf-8", "surrogateescape") for n, b in bodies.items()}
            )
            return CopyPlan(request, {n: sha(b) for n, b in bodies.items()}, sha(*sorted(bodies.values())))
        if len(words) < 2:
            raise BuildError(f"{self._where(instruction)}: {instruction.cmd} needs a source and a destination")
        source_stage = flags.get("from")
        if source_stage is not None:
            state_key = self._source_state(instruction, source_stage).key
            return CopyPlan(request, {}, sha(state_key, *request.sources))
        urls = addurl.for_step(
            instruction.cmd, request.sources, flags, self.store.scratch_dir, self._where(instruction)
        )
        if urls is not None:
            return CopyPlan(request, *urls.key(), urls)
        try:
            side = self._context_side()
            matches = copysource.find(request.sources, side.tree, side.what, side.excluded)
        except CopyError as exc:
            raise BuildError(f"{self._where(instruction)}: {exc}") from None
        content, files = self.context.content_hash([m.path.lstrip("/") for m in matches])
        return CopyPlan(request, files, sha(content, *(m.name for m in matches)))

    def _context_side(self) -> SourceSide:
        return SourceSide(ContextTree(self.context), "the build context", self.context.ignore.excluded)

    def _source_state(self, instruction: Instruction, name: str) -> StageState:
        state = self.stages.get(name.lower())
        if state is not None:
            return state
        try:
            return StageState.from_image(self.store.resolve(name))
        except BuildError:
            if _looks_remote(name):
                return StageState.from_image(self._pull(instruction, name))
            raise BuildError(
                f"{self._where(instruction)}: --from={name} is neither an earlier stage nor an image in the store"
            ) from None

    def _heredoc_files(self, instruction: Instruction, state: StageState) -> dict[str, str]:
        """name -> content of each heredoc of a COPY, variables expanded unless its delimiter was quoted."""
        return {
            h.name: self._expand(instruction, h.content, state.scope) if h.expand else h.content
            for h in instruction.heredocs
        }

    def _copy(self, instruction: Instruction, state: StageState, plan: CopyPlan) -> str:
        layer = self.store.scratch_dir("layer-")
        try:
            with self._rootfs(state) as image, self._source_side(instruction) as side:
                if plan.urls is not None:
                    plan.urls.write(plan.request, image, layer)
                else:
                    copystep.run(plan.request, image, side, layer)
        except BaseException as exc:
            shutil.rmtree(layer, ignore_errors=True)
            if isinstance(exc, CopyError):
                raise BuildError(f"{self._where(instruction)}: {exc}") from None
            raise
        return layer

    @contextlib.contextmanager
    def _source_side(self, instruction: Instruction) -> Iterator[SourceSide]:
        name = instruction.flags.get("from")
        if name is None:
            yield self._context_side()
            return
        with self._rootfs(self._source_state(instruction, name)) as root:
            yield SourceSide(root, f"stage '{name}'")

    def _rootfs(self, state: StageState) -> LayersView:
        """A stage's rootfs to read, straight from its layers (see layerview: no mount needed)."""
        return LayersView(list(dict.fromkeys(self.store.layer_dir(layer.diff_id) for layer in reversed(state.layers))))

    # -- the image ------------------------------------------------------------------------------------------------

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


def _looks_remote(name: str) -> bool:
    """Whether an image name points at a registry (a host with a dot or a port, or localhost), as docker reads it."""
    first = name.split("/", 1)[0]
    return "/" in name and ("." in first or ":" in first or first == "localhost")
