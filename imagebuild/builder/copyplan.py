"""COPY and ADD as the build sees them: the plan the cache keys on (what is asked, the content of the sources),
the trees copied from (the context, or an earlier stage read without a mount) and the layer written. The
copy rules themselves live in copystep and the modules it uses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

from imagebuild.builder import copysource, copystep
from imagebuild.builder.copydest import CopyError
from imagebuild.builder.copyflags import parse_chmod
from imagebuild.builder.copysource import ContextTree
from imagebuild.builder.copystep import CopyRequest, SourceSide
from imagebuild.builder.layerview import LayersView
from imagebuild.builder.state import StageState, sha
from imagebuild.builder.stepbase import StepBase, looks_remote
from imagebuild.dockerfile import Instruction
from imagebuild.errors import BuildError


@dataclass(frozen=True)
class CopyPlan:
    """A COPY or ADD as the cache sees it: what it asks for, and the content of its sources."""

    request: CopyRequest
    files: dict[str, str]  # per-file digests, for --explain-cache
    content: str


class CopySteps(StepBase):
    """COPY and ADD: their plan for the cache, the trees they read, the layer they write."""

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
        for source in request.sources:
            if instruction.cmd == "ADD" and "://" in source:
                raise BuildError(
                    f"{self._where(instruction)}: ADD of a URL is not supported: download it in a RUN "
                    "step, or into the context and COPY it"
                )
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
            if looks_remote(name):
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
