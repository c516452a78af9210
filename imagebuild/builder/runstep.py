"""A RUN step: the command runs on a union mount of the layers so far with a fresh upper; that upper, once
unmounted, is the new layer. Its environment, its output shown under the step number, and the mount points
bubblewrap made taken out of the layer again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

from imagebuild import sandbox, userns
from imagebuild.builder.state import StageState
from imagebuild.builder.stepbase import StepBase
from imagebuild.dockerfile import Instruction
from imagebuild.errors import BuildError
from unionfs import MountError, mounted

MOUNTPOINTS = ("dev", "proc", "sys", "etc")  # bubblewrap makes these in the rootfs; they are not the step's work


class RunStep(StepBase):
    """RUN: a command on a union mount, its upper the layer."""

    def _run_env(self, state: StageState) -> dict[str, str]:
        """A RUN step's environment: its ARGs and ENV, and SOURCE_DATE_EPOCH when the build has an epoch (so tools
        that honour it, Python's compileall among them, make output that does not depend on the build's time)."""
        env = {**state.args, **state.env}
        if self.options.epoch is not None:
            env["SOURCE_DATE_EPOCH"] = str(self.options.epoch)
        return env

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
        except BaseException as exc:
            shutil.rmtree(upper, ignore_errors=True)
            if isinstance(exc, MountError):
                raise BuildError(f"{self._where(instruction)}: cannot mount the layers for RUN: {exc}") from None
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
