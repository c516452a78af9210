"""The build executor: walks a parsed Dockerfile stage by stage and makes one layer per RUN, COPY and ADD.

A RUN step runs on a union mount of the layers so far with a fresh upper; that upper, once unmounted, is the new
layer. COPY and ADD write straight into a fresh layer directory. Every other instruction changes the config.
A step is reused from the cache when the steps before it, its own text and (COPY/ADD) the content of its
sources match; mtimes never count. Layers are tarred with mtimes clamped to SOURCE_DATE_EPOCH (0 when unset)
and the config's dates are that epoch too, so a rebuild of the same inputs gives the same image digest.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import os
import platform
import re
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from imagebuild import sandbox, transport
from imagebuild.build.state import StageState, sha
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
from imagebuild.layer import LayerError, extract_layer_tar
from imagebuild.oci import Descriptor, Healthcheck, History, ImageConfig, RootFS
from imagebuild.store.images import Image, Layer, Store
from imagebuild.transport import registry
from unionfs.api import MountError, mounted
from unionfs.ownership import OverrideStat
from unionfs.whiteout import OVERRIDE_STAT

LAYER_STEPS = frozenset({"RUN", "COPY", "ADD"})
MOUNTPOINTS = ("dev", "proc", "sys")  # bubblewrap makes these in the rootfs; they are not the step's work


@dataclass
class Options:
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    explain: bool = False
    epoch: int = 0
    insecure: bool = False  # FROM a registry over plain http


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
            first = base.split("/", 1)[0]
            if "/" not in base or not ("." in first or ":" in first or first == "localhost"):
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
            History(created=self._created(), created_by=instruction.original, comment="imagebuild", empty_layer=empty)
        )

    def _created(self) -> str:
        return datetime.datetime.fromtimestamp(self.options.epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

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
        if instruction.cmd == "RUN":
            argv = self._command(instruction, state)
            text = repr(("RUN", argv, sorted(state.env.items()), sorted(state.args.items()), state.config.working_dir))
            files: dict[str, str] = {}
            content = ""
        else:
            sources, dest, files, content = self._copy_plan(instruction, state)
            text = repr((instruction.cmd, sources, dest, sorted(instruction.flags.items()), state.config.working_dir))
        step_id = sha(state.key, text)
        key = sha(step_id, content)
        entry = None if self.options.no_cache else self.store.cache_get(key)
        if entry is not None:
            layer = Layer(entry["diff_id"], Descriptor.from_dict(entry["blob"]))
            why = "same steps before it, same instruction" + (f", same content of {len(files)} files" if files else "")
            self._say(f" ---> Using cache {layer.diff_id[7:19]}")
        else:
            why = self._why_missed(step_id, files)
            if instruction.cmd == "RUN":
                layer_dir = self._run(instruction, state)
            else:
                layer_dir = self._copy(instruction, state)
            layer = self.store.add_layer(layer_dir, self.options.epoch)
            self.store.cache_put(key, {"diff_id": layer.diff_id, "blob": layer.blob.to_dict()})
            self._say(f" ---> {layer.diff_id[7:19]}")
        self.store.step_put(step_id, {"files": files})
        if self.options.explain:
            self._say(f" ---> cache {'hit' if entry is not None else 'miss'}: {why}")
        self.reports.append(StepReport(self._step, instruction.original, entry is not None, why))
        state.layers.append(layer)
        state.key = key
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
        return [self.store.layer_dir(layer.diff_id) for layer in reversed(state.layers)] or [empty]

    def _run(self, instruction: Instruction, state: StageState) -> str:
        upper = self.store.scratch_dir("upper-")
        work = self.store.scratch_dir("work-")
        mnt = sandbox.mountpoint()
        empty = self.store.scratch_dir("empty-")
        options = sandbox.union_options(state.config.user)
        lowers = self._lowers(state, empty)
        try:
            with mounted(mnt, lowers, upper, work, options):
                workdir = state.config.working_dir or "/"
                os.makedirs(os.path.join(mnt, workdir.lstrip("/")), exist_ok=True)
                env = {**state.args, **state.env}
                try:
                    user = sandbox.resolve_user(mnt, state.config.user)
                except BuildError as exc:
                    raise BuildError(f"{self._where(instruction)}: {exc}") from None
                argv = self._command(instruction, state)
                sandbox.prepare(mnt)
                status = self._stream(sandbox.bwrap_command(mnt, argv, env, workdir, user))
            if status != 0:
                raise BuildError(f"{self._where(instruction)}: RUN failed with exit status {status}", status)
            self._drop_mountpoints(upper, lowers)
            return upper
        except MountError as exc:
            raise BuildError(f"{self._where(instruction)}: cannot mount the layers for RUN: {exc}") from None
        except BaseException:
            shutil.rmtree(upper, ignore_errors=True)
            raise
        finally:
            for path in (work, mnt, empty):
                shutil.rmtree(path, ignore_errors=True)

    def _stream(self, command: list[str]) -> int:
        """Run the step's command, each line of its output shown under the step number."""
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        for raw in proc.stdout:
            self._say(f"[{self._step}] {raw.decode(errors='replace').rstrip()}")
        return proc.wait()

    def _drop_mountpoints(self, upper: str, lowers: list[str]) -> None:
        for name in MOUNTPOINTS:
            path = os.path.join(upper, name)
            if (
                os.path.isdir(path)
                and not os.listdir(path)
                and not any(os.path.lexists(os.path.join(lo, name)) for lo in lowers)
            ):
                os.rmdir(path)

    # COPY / ADD

    def _copy_plan(self, instruction: Instruction, state: StageState) -> tuple[list[str], str, dict[str, str], str]:
        words = self._words(instruction, state)
        if instruction.heredocs:  # COPY <<EOF /path: each heredoc is a file with that content
            bodies = self._heredoc_files(instruction, state)
            return words[:-1], words[-1], {n: sha(b) for n, b in bodies.items()}, sha(*sorted(bodies.values()))
        if len(words) < 2:
            raise BuildError(f"{self._where(instruction)}: {instruction.cmd} needs a source and a destination")
        sources, dest = words[:-1], words[-1]
        source_stage = instruction.flags.get("from")
        if source_stage is not None:
            state_key = self._source_state(instruction, source_stage).key
            return sources, dest, {}, sha(state_key, *sources)
        for source in sources:
            if instruction.cmd == "ADD" and "://" in source:
                raise BuildError(
                    f"{self._where(instruction)}: ADD of a URL is not supported: download it in a RUN "
                    "step, or into the context and COPY it"
                )
        try:
            matched = [m for source in sources for m in self.context.matching(source)]
        except BuildError as exc:
            raise BuildError(f"{self._where(instruction)}: {exc}") from None
        content, files = self.context.content_hash(matched)
        return sources, dest, files, content

    def _source_state(self, instruction: Instruction, name: str) -> StageState:
        state = self.stages.get(name.lower())
        if state is not None:
            return state
        try:
            return StageState.from_image(self.store.resolve(name))
        except BuildError:
            raise BuildError(
                f"{self._where(instruction)}: --from={name} is neither an earlier stage nor an image in the store"
            ) from None

    def _heredoc_files(self, instruction: Instruction, state: StageState) -> dict[str, str]:
        """name -> content of each heredoc of a COPY, variables expanded unless its delimiter was quoted."""
        return {
            h.name: self._expand(instruction, h.content, state.scope) if h.expand else h.content
            for h in instruction.heredocs
        }

    def _copy(self, instruction: Instruction, state: StageState) -> str:
        sources, dest, _files, _content = self._copy_plan(instruction, state)
        layer = self.store.scratch_dir("layer-")
        if instruction.heredocs:
            try:
                self._copy_heredocs(instruction, state, dest, layer)
            except BaseException:
                shutil.rmtree(layer, ignore_errors=True)
                raise
            return layer
        try:
            with self._source_root(instruction) as root:
                self._copy_into(instruction, state, root, sources, dest, layer)
        except BaseException:
            shutil.rmtree(layer, ignore_errors=True)
            raise
        return layer

    def _copy_heredocs(self, instruction: Instruction, state: StageState, dest: str, layer: str) -> None:
        bodies = self._heredoc_files(instruction, state)
        target = os.path.normpath(os.path.join(state.config.working_dir or "/", dest)).lstrip("/")
        into_dir = dest.endswith("/") or len(bodies) > 1
        self._make_parents(layer, target if into_dir else os.path.dirname(target))
        mode = int(instruction.flags["chmod"], 8) if "chmod" in instruction.flags else 0o644
        for name, body in bodies.items():
            out = os.path.join(layer, target, name) if into_dir else os.path.join(layer, target)
            with open(out, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(body)
            os.chmod(out, mode)
            self._own_tree(out, self._owner(instruction, state), None)

    @contextlib.contextmanager
    def _source_root(self, instruction: Instruction) -> Iterator[str]:
        name = instruction.flags.get("from")
        if name is None:
            yield self.context.root
            return
        source = self._source_state(instruction, name)
        mnt = self.store.scratch_dir("from-")
        empty = self.store.scratch_dir("empty-")
        try:
            with mounted(mnt, self._lowers(source, empty)):
                yield mnt
        except MountError as exc:
            raise BuildError(f"{self._where(instruction)}: cannot mount stage '{name}': {exc}") from None
        finally:
            shutil.rmtree(mnt, ignore_errors=True)
            shutil.rmtree(empty, ignore_errors=True)

    def _copy_into(
        self, instruction: Instruction, state: StageState, root: str, sources: list[str], dest: str, layer: str
    ) -> None:
        workdir = state.config.working_dir or "/"
        target = os.path.normpath(os.path.join(workdir, dest)).lstrip("/")
        if instruction.flags.get("from") is None:
            matched = [m for s in sources for m in self.context.matching(s)]
        else:
            matched = self._match_in(instruction, root, sources)
        into_dir = dest.endswith("/") or len(matched) > 1 or any(os.path.isdir(os.path.join(root, m)) for m in matched)
        owner = self._owner(instruction, state)
        mode = int(instruction.flags["chmod"], 8) if "chmod" in instruction.flags else None
        self._make_parents(layer, target if into_dir else os.path.dirname(target))
        for rel in matched:
            src = os.path.join(root, rel)
            if os.path.isdir(src) and not os.path.islink(src):
                out = os.path.join(layer, target)
                # a directory's content is copied, not the directory itself (docker semantics)
                shutil.copytree(src, out, symlinks=True, dirs_exist_ok=True, ignore=self._ignored(rel, root))
            else:
                out = os.path.join(layer, target, os.path.basename(rel)) if into_dir else os.path.join(layer, target)
                if instruction.cmd == "ADD" and _is_archive(src):
                    self._extract_into(instruction, src, os.path.join(layer, target))
                    continue
                shutil.copy2(src, out, follow_symlinks=False)
            self._own_tree(out, owner, mode)

    def _ignored(self, rel: str, root: str):  # type: ignore[no-untyped-def]
        """For copytree: leave out what .dockerignore excludes (only for the build context)."""
        if root != self.context.root:
            return None

        def ignore(directory: str, names: list[str]) -> list[str]:
            base = os.path.relpath(directory, root)
            return [n for n in names if os.path.normpath(os.path.join(base, n)) not in self.context.entries]

        return ignore

    def _match_in(self, instruction: Instruction, root: str, sources: list[str]) -> list[str]:
        found = []
        for source in sources:
            rel = os.path.normpath(source).lstrip("/")
            if rel.startswith(".."):
                raise BuildError(f"{self._where(instruction)}: source '{source}' leaves the stage's root")
            if not os.path.lexists(os.path.join(root, rel)):
                raise BuildError(
                    f"{self._where(instruction)}: '{source}' not found in stage '{instruction.flags.get('from')}'"
                )
            found.append(rel)
        return found

    def _owner(self, instruction: Instruction, state: StageState) -> tuple[int, int]:
        spec = instruction.flags.get("chown")
        if spec is None:
            return 0, 0
        user, _, group = self._expand(instruction, spec, state.scope).partition(":")
        try:
            uid = int(user) if user.isdigit() else 0 if user == "root" else -1
            gid = int(group) if group.isdigit() else uid if not group else 0 if group == "root" else -1
        except ValueError:
            uid = gid = -1
        if uid < 0 or gid < 0:
            raise BuildError(f"{self._where(instruction)}: --chown={spec}: give numeric ids (or root)")
        return uid, gid

    def _own_tree(self, top: str, owner: tuple[int, int], mode: int | None) -> None:
        for path in _walk(top):
            st = os.lstat(path)
            if mode is not None and not stat.S_ISLNK(st.st_mode):
                os.chmod(path, mode)
                st = os.lstat(path)
            if os.geteuid() == 0:
                os.lchown(path, *owner)
            elif stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                # rootless: every entry says whose it is, so a later RUN's copy-up keeps it (symlinks can't)
                record = OverrideStat(owner[0], owner[1], st.st_mode)
                os.setxattr(path, OVERRIDE_STAT, record.encode())

    def _make_parents(self, layer: str, rel_dir: str) -> None:
        path = layer
        for part in [p for p in rel_dir.split("/") if p]:
            path = os.path.join(path, part)
            if not os.path.isdir(path):
                os.mkdir(path, 0o755)
                os.chmod(path, 0o755)
                self._own_tree(path, (0, 0), None)

    def _extract_into(self, instruction: Instruction, archive: str, target: str) -> None:
        tmp = self.store.scratch_dir("add-")
        os.rmdir(tmp)
        try:
            with open(archive, "rb") as f:
                extract_layer_tar(f, tmp, whiteout_form="file", rootless=os.geteuid() != 0)
            os.makedirs(target, exist_ok=True)
            for name in os.listdir(tmp):
                shutil.move(os.path.join(tmp, name), os.path.join(target, name))
        except LayerError as exc:
            raise BuildError(f"{self._where(instruction)}: ADD {os.path.basename(archive)}: {exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- the image ------------------------------------------------------------------------------------------------

    def _commit(self, state: StageState) -> str:
        machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        config = ImageConfig(
            architecture=machine,
            os="linux",
            rootfs=RootFS(diff_ids=[layer.diff_id for layer in state.layers]),
            config=state.config,
            history=state.history,
            created=self._created(),
        )
        return self.store.commit(config, state.layers)


def _is_archive(path: str) -> bool:
    try:
        return os.path.isfile(path) and tarfile.is_tarfile(path)
    except OSError:
        return False


def _walk(top: str) -> Iterator[str]:
    yield top
    if os.path.isdir(top) and not os.path.islink(top):
        for dirpath, dirs, files in os.walk(top):
            for name in dirs + files:
                yield os.path.join(dirpath, name)
