"""A RUN step: the command runs on a union mount of the layers so far with a fresh upper; that upper, once
unmounted, is the new layer. Its environment, its output shown under the step number, and the mount points
bubblewrap made taken out of the layer again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator

from imagebuild import sandbox, userns
from imagebuild.builder import kerneloverlay, runmounts
from imagebuild.builder.state import StageState
from imagebuild.builder.stepbase import StepBase
from imagebuild.dockerfile import Instruction
from imagebuild.errors import BuildError
from unionfs import MountError, UnionMount, mounted

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

    def _run(self, instruction: Instruction, state: StageState, mounts: runmounts.Plan | None = None) -> str:
        ranges = userns.ranges()
        kernel = ranges is None and self._kernel_overlay()
        upper = self.store.scratch_dir("upper-")
        work = self.store.scratch_dir("work-")
        # a mount in a namespace of its own (the container's, or the kernel overlay's) is seen by no other user
        mnt = sandbox.mountpoint(private=ranges is None and not kernel)
        empty = self.store.scratch_dir("empty-")
        names = sandbox.names_dir()
        # fsync=0: the upper is thrown away or captured as a layer (and synced then), so the step's own fsyncs
        # (dpkg makes one per file it unpacks) need not wait for the disk
        options = [*sandbox.union_options(state.config.user, namespace=ranges is not None), "fsync=0"]
        lowers = self._lowers(state, empty)
        namespace = None if ranges is None else userns.Namespace(*ranges)
        try:
            if namespace is not None:
                namespace.open()
            enter = [] if namespace is None else namespace.enter()
            with (
                runmounts.Active(mounts, self.store, self.context, lowers, namespace, self.options.secrets) as active,
                self._mounted(instruction, mnt, active, upper, work, options, namespace, kernel) as union,
            ):
                on_kernel = isinstance(union, kerneloverlay.KernelMount)  # else unionfs, maybe after a refusal
                if isinstance(union, kerneloverlay.KernelMount):
                    enter = union.enter()
                workdir = state.config.working_dir or "/"
                env = self._run_env(state)
                try:
                    if namespace is None:
                        seen = union.path if isinstance(union, kerneloverlay.KernelMount) else mnt
                        os.makedirs(os.path.join(seen, workdir.lstrip("/")), exist_ok=True)
                        user = sandbox.resolve_user(seen, state.config.user)
                        binds = sandbox.name_files(names, lambda name: os.path.islink(os.path.join(seen, name)))
                        sandbox.prepare(seen, binds)
                    else:
                        namespace.makedirs(*(os.path.join(mnt, d.lstrip("/")) for d in (workdir, "dev", "proc", "etc")))
                        user = sandbox.resolve_user(mnt, state.config.user, namespace.read)
                        binds = sandbox.name_files(names, lambda name: namespace.is_link(os.path.join(mnt, name)))
                        namespace.create(*(os.path.join(mnt, target.lstrip("/")) for _, target in binds))
                except BuildError as exc:
                    raise BuildError(f"{self._where(instruction)}: {exc}") from None
                argv = self._command(instruction, state)
                # --unshare-pid: as in docker, what the step leaves running is killed when it ends; nothing writes
                # to the upper once it is captured (a kernel overlay stays mounted while any process holds it)
                sandboxed = sandbox.bwrap_command(
                    mnt,
                    argv,
                    env,
                    workdir,
                    user,
                    inside=bool(enter),
                    binds=binds,
                    extra=active.bwrap_args,
                    options=["--unshare-pid"],
                )
                command = active.command(enter, sandboxed, mnt, user)
                status = self._stream(command, None if enter else sandbox.preexec(mnt, user))
            faults = union.io_errors()
            if faults:  # what the step wrote cannot be trusted: never committed as a layer
                raise BuildError(
                    f"{self._where(instruction)}: RUN's filesystem failed {len(faults)} request(s) with an internal "
                    f"error (EIO), so its layer is not kept; first: {faults[0]}; please report it"
                )
            if status != 0:
                why = f"{self._where(instruction)}: RUN failed with exit status {status}"
                if os.geteuid() != 0 and namespace is None:
                    why += f" ({userns.no_range_hint()})"
                raise BuildError(why, status)
            if on_kernel and (reserved := kerneloverlay.strip_bookkeeping(upper)):
                raise BuildError(
                    f"{self._where(instruction)}: RUN made {reserved[0]!r}, a name layers keep for whiteouts "
                    f"(.wh.*), which an image would read as a deletion: rename it (unionfs refuses such names)"
                )
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

    def _kernel_overlay(self) -> bool:
        """Whether this RUN (as root, no subordinate-id namespace) should try kernel overlayfs (`--run-fs`)."""
        if self.options.run_fs == "unionfs" or self._kernel_refused is not None:
            return False
        why = kerneloverlay.refusal()
        if why is None:
            return True
        if self.options.run_fs == "overlay":
            raise BuildError(f"--run-fs overlay: kernel overlayfs cannot be used ({why}): use --run-fs unionfs")
        with self._refusal_lock:
            first, self._kernel_refused = self._kernel_refused is None, why
        if first and os.geteuid() == 0:
            self._say(f"note: RUN steps use unionfs: {why}")
        return False

    @contextlib.contextmanager
    def _mounted(
        self,
        instruction: Instruction,
        mnt: str,
        active: runmounts.Active,
        upper: str,
        work: str,
        options: list[str],
        namespace: userns.Namespace | None,
        kernel: bool,
    ) -> Iterator[UnionMount | kerneloverlay.KernelMount]:
        """The RUN's rootfs: kernel overlayfs when chosen and the kernel takes it, else unionfs. Under `auto`, the
        first refusal is said once and the build goes on with unionfs."""
        if kernel:
            try:
                mount = kerneloverlay.KernelMount(mnt, active.lowers, upper, work).mount(active.union_points)
            except kerneloverlay.Refused as exc:
                if self.options.run_fs == "overlay":
                    raise BuildError(
                        f"{self._where(instruction)}: kernel overlayfs refused the RUN's mount ({exc}): "
                        "use --run-fs unionfs"
                    ) from None
                with self._refusal_lock:
                    first = self._kernel_refused is None
                    self._kernel_refused = str(exc)
                if first:
                    self._say(f"note: RUN steps use unionfs: kernel overlayfs refused the mount ({exc})")
                for leftover in os.listdir(work):  # the kernel's work dir, where the refused mount began one
                    shutil.rmtree(os.path.join(work, leftover), ignore_errors=True)
                os.chmod(os.path.dirname(mnt), 0o700)  # unionfs's mount is the host's: keep other users out
            else:
                try:
                    yield mount
                finally:
                    mount.unmount()
                return
        enter = namespace.daemon() if namespace else []
        with mounted(mnt, active.lowers, upper, work, options, enter=enter) as union:
            yield union

    def _stream(self, command: list[str], preexec: Callable[[], None] | None = None) -> int:
        """Run the step's command, each line of its output shown under the step number; a cancel kills it."""
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
            process_group=0,  # a group of its own, which a cancelled build kills whole
        )
        assert proc.stdout is not None
        with self.cancel.watch(proc):
            for raw in proc.stdout:
                self._say(f"[{self._step}] {raw.decode(errors='replace').rstrip()}")
            status = proc.wait()
        self.cancel.check()  # killed because another stage failed: not this step's failure
        return status

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
