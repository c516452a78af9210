"""`RUN --mount`: cache, secret, bind and tmpfs mounts, as BuildKit gives them, with nothing of them in the layer.

`plan` reads a RUN's --mount flags (variables expanded) and makes the part of the step's cache key they add: each
mount's form; for a bind, the content of what it binds (the context's files, or the source stage's cache key);
never a cache's or a secret's content. `Active` prepares the sources around the RUN:

- cache: the store's directory for the id (store/caches.py), locked as `sharing` says;
- secret: a copy of the bytes in a private directory outside the store (tmpfs where there is one), or a variable;
- bind: the context's files under `source` copied (a .dockerignore'd file is not there, as in BuildKit), or a
  union mount of the stage or image `from` names, with a throwaway upper when `rw`;
- tmpfs: nothing to prepare.

The mounts go on the rootfs above the union mount, in a mount namespace of the RUN's own (imagebuild/cli/mountns.py,
as root or as the root of the build's user namespace; bubblewrap's options for a rootless build without
subordinate ids), so the upper, the layer, never sees them. A target the image lacks is made in a layer of stubs
stacked above the image's layers: it is in the RUN's view, not in its upper, and its parent directories there copy
the metadata the image shows, so nothing of it reaches the layer either (BuildKit leaves no trace of a target that
did not exist).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from imagebuild import sandbox
from imagebuild.builder.copydest import CopyError, resolve
from imagebuild.builder.layerview import LayersView
from imagebuild.builder.state import StageState, sha
from imagebuild.context import Context
from imagebuild.dockerfile.mounts import Mount, MountError, parse_mount
from imagebuild.errors import BuildError
from imagebuild.store import caches
from imagebuild.store.images import Store
from imagebuild.userns import Namespace
from unionfs import MountError as UnionMountError
from unionfs import mounted

_NOT_COPIED = ("trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.")  # opaque markers and the like


@dataclass
class Plan:
    """A RUN's mounts, checked, and what they add to its cache key ("" when it has none)."""

    where: str
    mounts: list[Mount] = field(default_factory=list)
    key: str = ""
    states: dict[str, StageState] = field(default_factory=dict)  # by `from` name


def plan(
    where: str,
    values: Sequence[str],
    expand: Callable[[str], str],
    context: Context,
    state_of: Callable[[str], StageState],
) -> Plan:
    """The --mount values of a RUN at `where` (path:line), read and checked; `state_of(name)` finds a stage or an
    image for `from=` (raising BuildError with the line)."""
    result = Plan(where)
    if not values:
        return result
    parts: list[str] = []
    for value in values:
        try:
            mount = parse_mount(expand(value))
        except MountError as exc:
            raise BuildError(f"{where}: {exc}") from None
        parts.append(mount.key())
        if mount.type in ("bind", "cache") and mount.from_ is not None:
            state = result.states.get(mount.from_) or state_of(mount.from_)
            result.states[mount.from_] = state
            parts.append(state.key)
        elif mount.type == "bind":
            names = context.below(mount.source)
            if not names:
                raise BuildError(f"{where}: --mount source={mount.source or '.'} is not in the build context")
            parts.append(context.content_hash([mount.source])[0])
        result.mounts.append(mount)
    targets = [m.target for m in result.mounts if m.target is not None]
    if len(set(targets)) != len(targets):
        raise BuildError(f"{where}: two --mount flags have the same target")
    result.key = sha(*parts)
    return result


@dataclass
class _Prepared:
    mount: Mount
    target: str  # resolved in the image, relative to the rootfs
    base: str = ""  # the source: `base/rel` (tmpfs: none)
    rel: str = ""
    is_dir: bool = True


class Active:
    """A RUN's mounts made ready, for the length of a `with`; `lowers` are the layers to mount the rootfs from."""

    def __init__(
        self,
        plan: Plan | None,
        store: Store,
        context: Context,
        lowers: list[str],
        namespace: Namespace | None,
        secrets: dict[str, bytes],
    ) -> None:
        self.plan = plan or Plan("")
        self.store = store
        self.context = context
        self.lowers = lowers
        self.namespace = namespace
        self.secrets = secrets
        self.privileged = os.geteuid() == 0 or namespace is not None
        self.bwrap_args: list[str] = []
        self._stack = contextlib.ExitStack()
        self._prepared: list[_Prepared] = []
        self._chown: list[tuple[str, int, int, int]] = []
        self._seed: list[tuple[str, str, str]] = []
        self._env: dict[str, str] = {}
        self._private = ""  # secrets and the plan: outside the store
        self.union_points: list[str] = []  # the unionfs mounts made for stage sources (--mount from=STAGE)

    def __enter__(self) -> Active:
        if not self.plan.mounts:
            return self
        try:
            # the pid in the name: `imagebuild check` finds it when a killed build could not remove it
            self._private = tempfile.mkdtemp(
                prefix=f"{sandbox.PRIVATE_PREFIX}{os.getpid()}-", dir=sandbox.private_base()
            )
            self._stack.callback(shutil.rmtree, self._private, True)
            for mount in sorted(self.plan.mounts, key=lambda m: (m.target or "").count("/")):
                self._prepare(mount)
            self._stubs()
            if not self.privileged:
                self.bwrap_args = self._bwrap_args()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()

    def _fail(self, message: str) -> BuildError:
        return BuildError(f"{self.plan.where}: {message}")

    # -- sources --------------------------------------------------------------------------------------------------

    def _prepare(self, mount: Mount) -> None:
        if mount.type == "secret":
            self._secret(mount)
        elif mount.type == "tmpfs":
            self._prepared.append(_Prepared(mount, ""))
        elif mount.type == "cache":
            self._cache(mount)
        elif mount.from_ is not None:
            base, rel, is_dir = self._stage_source(mount, writable=not mount.readonly)
            self._prepared.append(_Prepared(mount, "", base, rel, is_dir))
        else:
            self._context_source(mount)

    def _secret(self, mount: Mount) -> None:
        data = self.secrets.get(mount.id)
        if data is None:
            if mount.required:
                raise self._fail(
                    f"the secret '{mount.id}' is required but was not given: "
                    f"pass --secret id={mount.id},src=FILE (or id={mount.id},env=VARIABLE)"
                )
            return  # an optional secret not given: no mount, as BuildKit
        if mount.env is not None:
            self._env[mount.env] = data.decode("utf-8", "surrogateescape")
        if mount.target is None:
            return
        fd, path = tempfile.mkstemp(prefix="secret-", dir=self._private)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        mode = 0o400 if mount.mode is None else mount.mode
        if self.privileged:
            self._chown.append((path, mount.uid or 0, mount.gid or 0, mode))
        else:
            os.chmod(path, mode | 0o400)  # the building user plays every id: it must read it
        self._prepared.append(_Prepared(mount, "", self._private, os.path.basename(path), False))

    def _cache(self, mount: Mount) -> None:
        cache = self._stack.enter_context(caches.use(self.store.root, mount.id, mount.sharing))
        if cache.created:
            mode = 0o755 if mount.mode is None else mount.mode
            os.chmod(cache.path, mode)
            if self.privileged and (mount.uid or mount.gid):
                self._chown.append((cache.path, mount.uid or 0, mount.gid or 0, mode))
            if mount.from_ is not None:
                base, rel, is_dir = self._stage_source(mount, writable=False)
                if not is_dir:
                    raise self._fail(f"--mount from={mount.from_},source={mount.source}: the source is not a directory")
                self._seed.append((base, rel, cache.path))
        self._prepared.append(_Prepared(mount, "", os.path.dirname(cache.path), os.path.basename(cache.path)))

    def _stage_source(self, mount: Mount, writable: bool) -> tuple[str, str, bool]:
        assert mount.from_ is not None
        state = self.plan.states[mount.from_]
        lowers = self.store.lower_dirs(state.layers)
        with LayersView(lowers) as view:
            try:
                found = resolve("/" + mount.source, view)
            except CopyError as exc:
                raise self._fail(f"--mount from={mount.from_}: {exc}") from None
        if found.node is None:
            raise self._fail(f"--mount from={mount.from_}: no {'/' + mount.source} in it")
        empty = self._scratch("empty-")
        point = sandbox.mountpoint(private=self.namespace is None)
        self._stack.callback(sandbox.remove_mountpoint, point)
        upper = work = None
        if writable:
            upper, work = self._scratch("upper-"), self._scratch("work-")
        options = sandbox.union_options(namespace=self.namespace is not None)
        enter = [] if self.namespace is None else self.namespace.daemon()
        try:
            self._stack.enter_context(mounted(point, lowers or [empty], upper, work, options, enter=enter))
        except (UnionMountError, OSError) as exc:
            raise self._fail(f"cannot mount --mount from={mount.from_}: {exc}") from None
        self.union_points.append(point)
        return point, found.path.lstrip("/"), found.node.is_dir

    def _context_source(self, mount: Mount) -> None:
        """A copy of the context's files under `source` (what .dockerignore leaves), so a read-write mount changes
        nothing of the context and a read-only one shows only what the context gives the build."""
        copy = self._scratch("context-")
        root = self.context.root
        source = mount.source
        entry = self.context.entries.get(source) if source else None
        is_dir = entry is None or stat.S_ISDIR(entry.st.st_mode)
        for name in self.context.below(source):
            rel = os.path.relpath(name, source) if source else name
            if not is_dir:
                rel = os.path.basename(name)
            here, dest = os.path.join(root, name), os.path.join(copy, rel)
            mode = self.context.entries[name].st.st_mode
            if stat.S_ISDIR(mode):
                os.makedirs(dest, exist_ok=True)
            elif stat.S_ISLNK(mode):
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.symlink(os.readlink(here), dest)
            elif stat.S_ISREG(mode):
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy2(here, dest, follow_symlinks=False)
        for name in self.context.below(source):  # directory modes last: a 0555 one still gets its files
            mode = self.context.entries[name].st.st_mode
            if stat.S_ISDIR(mode):
                rel = os.path.relpath(name, source) if source else name
                os.chmod(os.path.join(copy, rel), stat.S_IMODE(mode))
        if is_dir:
            os.chmod(copy, 0o755)
            self._prepared.append(_Prepared(mount, "", os.path.dirname(copy), os.path.basename(copy)))
        else:
            self._prepared.append(_Prepared(mount, "", copy, os.path.basename(source), False))

    def _scratch(self, prefix: str) -> str:
        path = self.store.scratch_dir(prefix)
        self._stack.callback(shutil.rmtree, path, True)
        return path

    # -- targets --------------------------------------------------------------------------------------------------

    def _stubs(self) -> None:
        """Resolve each target in the image; make what it lacks in a layer of stubs stacked on top."""
        stub = ""
        with LayersView(self.lowers) as view:
            made: list[tuple[str, str]] = []  # (path in the image, where its metadata comes from)
            for item in self._prepared:
                target = item.mount.target
                assert target is not None
                try:
                    found = resolve(target, view)
                except CopyError as exc:
                    raise self._fail(f"--mount target={target}: {exc}") from None
                item.target = found.path.lstrip("/")
                if found.node is not None:
                    if found.node.is_dir != item.is_dir:
                        what = "a directory" if found.node.is_dir else "not a directory"
                        raise self._fail(f"cannot mount on {target}: it is {what} in the image")
                    continue
                if not stub:
                    stub = self._scratch("stubs-")
                parts = [p for p in found.path.split("/") if p]
                for depth in range(1, len(parts) + 1):
                    path = "/" + "/".join(parts[:depth])
                    disk = os.path.join(stub, *parts[:depth])
                    node = view.node(path)
                    if node is not None and not node.is_dir:
                        raise self._fail(f"cannot mount on {target}: {path} is not a directory in the image")
                    if os.path.lexists(disk):
                        continue
                    if depth == len(parts) and not item.is_dir:
                        os.close(os.open(disk, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
                    else:
                        os.mkdir(disk, 0o755)
                    if node is not None:
                        made.append((disk, view.layer_path(path) or ""))
            for disk, original in reversed(made):  # deepest first: making a child changes its parent's mtime
                _copy_metadata(original, disk)
        if stub:
            self.lowers = [stub, *self.lowers]

    # -- the command ----------------------------------------------------------------------------------------------

    def _bwrap_args(self) -> list[str]:
        """Rootless without subordinate ids: bubblewrap makes the mounts in its own namespaces."""
        args: list[str] = []
        for item in self._prepared:
            target = "/" + item.target
            if item.mount.type == "tmpfs":
                args += [*(["--size", str(item.mount.size)] if item.mount.size else []), "--tmpfs", target]
            else:
                args += ["--ro-bind" if item.mount.readonly else "--bind", os.path.join(item.base, item.rel), target]
        return args

    def command(self, enter: Sequence[str], sandboxed: Sequence[str], rootfs: str, user: tuple[int, int]) -> list[str]:
        """The RUN's command line with its mounts: `sandboxed` (bubblewrap's, maybe behind setpriv) started by our
        mount process, itself through `enter` (the build's user namespace) when there is one."""
        if not self.plan.mounts or not (self._prepared or self._env or self._seed):
            return [*enter, *sandboxed]
        # as root with a USER, the rootfs is bound over its private directory first (sandbox.preexec), unless the
        # mount is in a namespace of its own that `enter` enters (kerneloverlay.py)
        seen = os.path.dirname(rootfs) if os.geteuid() == 0 and user != (0, 0) and not enter else rootfs
        document = {
            "root": seen,
            "mounts": [
                {
                    "kind": "tmpfs" if p.mount.type == "tmpfs" else "bind",
                    "source": [p.base, p.rel],
                    "target": p.target,
                    "readonly": p.mount.readonly,
                    "size": p.mount.size,
                    "is_dir": p.is_dir,
                }
                for p in (self._prepared if self.privileged else [])
            ],
            "chown": self._chown,
            "seed": self._seed,
            "env": None,
        }
        if self._env:
            env_path = os.path.join(self._private, "env.json")
            with open(os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
                json.dump(self._env, f)
            document["env"] = env_path
        plan_path = os.path.join(self._private, "plan.json")
        with open(plan_path, "w", encoding="utf-8") as f:
            json.dump(document, f)
        return [*enter, sys.executable, "-m", "imagebuild.cli.mountns", plan_path, "--", *sandboxed]


def _copy_metadata(original: str, stub: str) -> None:
    """Give a stub directory what the image shows for it: mode, owner, times, ownership records and xattrs."""
    if not original:
        return
    st = os.lstat(original)
    with contextlib.suppress(OSError):
        for name in os.listxattr(original, follow_symlinks=False):
            if not name.startswith(_NOT_COPIED):
                os.setxattr(stub, name, os.getxattr(original, name, follow_symlinks=False), follow_symlinks=False)
    if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(OSError):
            os.chown(stub, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(stub, stat.S_IMODE(st.st_mode))
    os.utime(stub, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
