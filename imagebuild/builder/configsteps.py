"""The instructions that change only the image's config (ARG, ENV, LABEL, WORKDIR, USER, EXPOSE, CMD, ENTRYPOINT,
VOLUME, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER): one handler each, `_do_<instruction>`.
"""

from __future__ import annotations

import os

from imagebuild.builder.state import StageState
from imagebuild.builder.stepbase import StepBase
from imagebuild.dockerfile import DockerfileError, Instruction, parse_duration_ns, parse_port_spec
from imagebuild.errors import BuildError
from imagebuild.oci import Healthcheck


class ConfigSteps(StepBase):
    """The config-only instructions' handlers."""

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
