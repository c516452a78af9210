"""The differential state machine: the same random operations on our mount, kernel overlayfs and a model.

One example: random lower layers, written in our forms for the system under test and in the kernel's forms
for the oracle, and merged into a plain directory for the model. Every rule runs one operation in each
target and requires the same outcome (value or errno name); after every step the three trees must hold the
same entries (differences.py lists what is not compared and where the model, not the kernel, decides).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.fuzz import differences, fsops
from tests.fuzz.fsops import Outcome, outcome
from tests.fuzz.layertree import BASE_TIME_NS, CONTENTS, DIR_MODES, FILE_MODES, POOL, Dir, layer_stacks
from tests.fuzz.targets import Command, Kernel, Model, Ours, Target, kernel_unavailable, other_target, remove

PRIVILEGED = os.geteuid() == 0
paths = st.lists(st.sampled_from(POOL), min_size=1, max_size=3).map("/".join)
long_paths = st.one_of(
    st.just(fsops.LONG_NAME),
    paths.map(lambda p: f"{p}/{fsops.LONG_NAME}"),
    paths.map(lambda p: f"{fsops.LONG_NAME}/{p}"),
)
link_targets = st.one_of(st.sampled_from(POOL), paths, paths.map(lambda p: "../" + p))
datas = st.one_of(st.sampled_from(CONTENTS), st.binary(max_size=40))
offsets = st.sampled_from((0, 0, 1, 5, 100, 4095, 4096, 5000, 9000))
sizes = st.sampled_from((0, 1, 3, 64, 4096, 4097, 6000))
modes = st.sampled_from(FILE_MODES + DIR_MODES + (0o1777, 0o000))
xattr_names = st.sampled_from(("user.k", "user.m", "user.new"))
times_ns = st.sampled_from((BASE_TIME_NS + 7 * 10**9, 1_500_000_000 * 10**9 + 123_456_789, 0))
RENAME_FLAGS = (0, 0, 0, fsops.RENAME_NOREPLACE, fsops.RENAME_EXCHANGE)
COARSE_CLOCK_NS = 50_000_000
SCRATCH = Path(os.environ.get("UNIONFS_FUZZ_SCRATCH", tempfile.gettempdir()))


class UnionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.base: Path | None = None
        self.sut: Ours | Command | None = None
        self.oracle: Kernel | None = None
        self.model: Model | None = None
        self.fds: list[dict[str, int]] = []
        self.notes: list[str] = []
        self.kept_before_ns = time.time_ns()

    # -- set-up and tear-down ------------------------------------------------------------------------------------

    @initialize(layers=layer_stacks(privileged=PRIVILEGED))
    def mount(self, layers: list[Dir]) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="unionfs-fuzz-", dir=SCRATCH))
        command = other_target()
        self.sut = Ours(self.base / "sut", layers) if command is None else Command(self.base / "sut", layers, command)
        self.model = Model(self.base / "model", layers)
        if kernel_unavailable(SCRATCH) is None:
            self.oracle = Kernel(self.base / "kernel", layers)
            self.oracle.open()
        self.sut.open()
        # Filesystems stamp times from the kernel's coarse clock, up to a tick behind time.time_ns(): an entry made
        # right after this must still count as made now (the layers' times are all far older).
        self.kept_before_ns = time.time_ns() - COARSE_CLOCK_NS
        self.compare_trees("the merged view of the layers")

    def teardown(self) -> None:
        self.close_fds()
        for target in (self.sut, self.oracle):
            if target is not None:
                target.close()
        if self.base is not None:
            remove(self.base)

    # -- running one operation everywhere ------------------------------------------------------------------------

    @property
    def targets(self) -> list[Target]:
        found: list[Target | None] = [self.sut, self.oracle, self.model]
        return [t for t in found if t is not None]

    @property
    def reference(self) -> Target:
        reference = self.oracle or self.model
        assert reference is not None
        return reference

    def each(self, op: Callable[[str], Any]) -> dict[str, Outcome]:
        return {t.name: outcome(lambda t=t: op(str(t.root))) for t in self.targets}  # type: ignore[misc]

    def expect(self, label: str, outs: dict[str, Outcome], reference: Target | None = None) -> None:
        assert self.sut is not None and self.model is not None
        reference = reference or self.reference
        got, want = outs[self.sut.name], outs[reference.name]
        if self.oracle is not None and reference is self.oracle:
            model = outs[self.model.name]
            assert want == model, f"{label}: kernel {want} but model {model}: a fuzzer bug, or a difference to list"
        assert got == want, f"{label}: {self.sut.name} {got}, {reference.name} {want}"

    def run(self, label: str, op: Callable[[str], Any]) -> dict[str, Outcome]:
        outs = self.each(op)
        self.expect(label, outs)
        return outs

    @contextlib.contextmanager
    def same_inode(self, path: str, *, follow: bool) -> Iterator[None]:
        """Our promise: an entry keeps its inode number when it is copied up (or otherwise changed)."""
        assert self.sut is not None
        full = os.path.join(self.sut.root, path)
        before = outcome(lambda: os.stat(full, follow_symlinks=follow).st_ino)
        yield
        after = outcome(lambda: os.stat(full, follow_symlinks=follow).st_ino)
        if before[0] == "ok" and after[0] == "ok":
            assert before == after, f"{path}: inode {before[1]} became {after[1]}"

    # -- invariants ----------------------------------------------------------------------------------------------

    def compare_trees(self, label: str) -> None:
        assert self.sut is not None and self.model is not None
        got = fsops.snapshot(str(self.sut.root), self.kept_before_ns, check_inodes=isinstance(self.sut, Ours))
        if self.oracle is not None:
            kernel = fsops.snapshot(str(self.oracle.root), self.kept_before_ns)
            model = fsops.snapshot(str(self.model.root), self.kept_before_ns)
            assert kernel == model, f"{label}: kernel and model differ:\n" + "\n".join(fsops.diff(kernel, model))
        else:
            model = fsops.snapshot(str(self.model.root), self.kept_before_ns)
        assert got == model, f"{label}: {self.sut.name} differs:\n" + "\n".join(fsops.diff(model, got))

    @invariant()
    def trees_match(self) -> None:
        if self.sut is not None:
            self.compare_trees("after this step")
            if isinstance(self.sut, Ours):
                log = self.sut.log()
                assert "internal error" not in log and "Traceback" not in log, f"daemon log:\n{log[-3000:]}"

    # -- data ----------------------------------------------------------------------------------------------------

    @rule(path=paths, how=st.sampled_from(sorted(fsops.WRITE_FLAGS)), offset=offsets, data=datas)
    def write(self, path: str, how: str, offset: int, data: bytes) -> None:
        with self.same_inode(path, follow=True):
            self.run(f"write {path} {how}", lambda r: fsops.write_file(os.path.join(r, path), how, offset, data))

    @rule(path=paths)
    def read(self, path: str) -> None:
        self.run(f"read {path}", lambda r: fsops.read_file(os.path.join(r, path)))

    @rule(path=paths, size=sizes)
    def truncate(self, path: str, size: int) -> None:
        with self.same_inode(path, follow=True):
            self.run(f"truncate {path}", lambda r: os.truncate(os.path.join(r, path), size))

    # -- names ---------------------------------------------------------------------------------------------------

    @rule(src=paths, dst=paths, flags=st.sampled_from(RENAME_FLAGS))
    def rename(self, src: str, dst: str, flags: int) -> None:
        label = f"rename {src} {dst} flags={flags}"
        outs = self.each(lambda r: fsops.renameat2(os.path.join(r, src), os.path.join(r, dst), flags))
        if self.oracle is None or differences.model_decides_rename(outs[self.oracle.name]) is None:
            self.expect(label, outs)
            return
        assert self.model is not None
        self.expect(label, outs, reference=self.model)
        if outs[self.model.name][0] == "ok":
            self.bring_oracle_along(src, dst, flags)

    def bring_oracle_along(self, src: str, dst: str, flags: int) -> None:
        """DIRECTORY_RENAME: do what `mv` does after EXDEV in the kernel's tree, or retire the oracle."""
        assert self.oracle is not None
        root = str(self.oracle.root)
        source, target = os.path.join(root, src), os.path.join(root, dst)
        linked = any(os.lstat(os.path.join(d, f)).st_nlink > 1 for d, _, files in os.walk(source) for f in files)
        if flags == fsops.RENAME_EXCHANGE or linked:
            self.retire_oracle(f"rename {src} {dst}: EXDEV the oracle cannot follow")
            return
        if os.path.isdir(target) and not os.path.islink(target):
            os.rmdir(target)
        subprocess.run(["cp", "-a", "--no-target-directory", source, target], check=True)
        subprocess.run(["rm", "-rf", source], check=True)

    def retire_oracle(self, why: str) -> None:
        assert self.oracle is not None
        self.notes.append(why)
        for fds in self.fds:
            with contextlib.suppress(OSError, KeyError):
                os.close(fds.pop(self.oracle.name))
        self.oracle.close()
        self.oracle = None

    @rule(src=paths, dst=paths)
    def link(self, src: str, dst: str) -> None:
        self.run(
            f"link {src} {dst}", lambda r: os.link(os.path.join(r, src), os.path.join(r, dst), follow_symlinks=False)
        )

    @rule(points_to=link_targets, path=paths)
    def symlink(self, points_to: str, path: str) -> None:
        self.run(f"symlink {points_to} {path}", lambda r: os.symlink(points_to, os.path.join(r, path)))

    @rule(path=paths)
    def unlink(self, path: str) -> None:
        self.run(f"unlink {path}", lambda r: os.unlink(os.path.join(r, path)))

    @rule(path=paths, mode=st.sampled_from(DIR_MODES))
    def mkdir(self, path: str, mode: int) -> None:
        self.run(f"mkdir {path}", lambda r: os.mkdir(os.path.join(r, path), mode))

    @rule(path=paths)
    def rmdir(self, path: str) -> None:
        self.run(f"rmdir {path}", lambda r: os.rmdir(os.path.join(r, path)))

    @rule(path=paths)
    def mkfifo(self, path: str) -> None:
        self.run(f"mkfifo {path}", lambda r: os.mkfifo(os.path.join(r, path), 0o640))

    @rule(path=long_paths, call=st.sampled_from(sorted(fsops.NAME_CALLS)), other=paths)
    def long_name(self, path: str, call: str, other: str) -> None:
        self.run(
            f"{call} {path.replace(fsops.LONG_NAME, '<256 bytes>')} {other}",
            lambda r: fsops.NAME_CALLS[call](os.path.join(r, path), os.path.join(r, other)),
        )

    # -- looking -------------------------------------------------------------------------------------------------

    @rule(path=st.one_of(st.just(""), paths))
    def listdir(self, path: str) -> None:
        self.run(f"listdir {path}", lambda r: fsops.listdir(os.path.join(r, path)))

    @rule(path=paths)
    def lstat(self, path: str) -> None:
        self.run(f"lstat {path}", lambda r: fsops.lstat(os.path.join(r, path)))

    @rule(path=paths)
    def stat(self, path: str) -> None:
        self.run(f"stat {path}", lambda r: fsops.stat_fields(os.stat(os.path.join(r, path))))

    @rule(path=paths)
    def readlink(self, path: str) -> None:
        self.run(f"readlink {path}", lambda r: os.readlink(os.path.join(r, path)))

    # -- metadata ------------------------------------------------------------------------------------------------

    @rule(path=paths, mode=modes)
    def chmod(self, path: str, mode: int) -> None:
        with self.same_inode(path, follow=True):
            self.run(f"chmod {path} {mode:o}", lambda r: os.chmod(os.path.join(r, path), mode))

    @rule(path=paths, atime=times_ns, mtime=times_ns)
    def utime(self, path: str, atime: int, mtime: int) -> None:
        with self.same_inode(path, follow=False):
            self.run(
                f"utime {path}",
                lambda r: os.utime(os.path.join(r, path), ns=(atime, mtime), follow_symlinks=False),
            )
        self.run(f"mtime {path}", lambda r: fsops.mtime_of(os.path.join(r, path)))

    @rule(path=paths, name=xattr_names, value=st.sampled_from((b"", b"1", b"value")))
    def setxattr(self, path: str, name: str, value: bytes) -> None:
        with self.same_inode(path, follow=False):
            self.run(
                f"setxattr {path} {name}",
                lambda r: os.setxattr(os.path.join(r, path), name, value, follow_symlinks=False),
            )

    @rule(path=paths, name=xattr_names)
    def getxattr(self, path: str, name: str) -> None:
        self.run(f"getxattr {path} {name}", lambda r: os.getxattr(os.path.join(r, path), name, follow_symlinks=False))

    @rule(path=paths)
    def listxattr(self, path: str) -> None:
        self.run(
            f"listxattr {path}",
            lambda r: sorted(
                n for n in os.listxattr(os.path.join(r, path), follow_symlinks=False) if n.startswith("user.")
            ),
        )

    @rule(path=paths, name=xattr_names)
    def removexattr(self, path: str, name: str) -> None:
        self.run(
            f"removexattr {path} {name}",
            lambda r: os.removexattr(os.path.join(r, path), name, follow_symlinks=False),
        )

    @rule(path=paths, which=st.sampled_from(sorted(fsops.ACLS)), kind=st.sampled_from(sorted(fsops.ACL_NAMES)))
    def setacl(self, path: str, which: str, kind: str) -> None:
        """setfacl: the mode follows an access ACL; a default ACL is inherited by what is created below."""
        with self.same_inode(path, follow=False):
            self.run(
                f"setacl {path} {kind} {which}",
                lambda r: os.setxattr(
                    os.path.join(r, path), fsops.ACL_NAMES[kind], fsops.ACLS[which], follow_symlinks=False
                ),
            )
        self.run(f"lstat {path}", lambda r: fsops.lstat(os.path.join(r, path)))

    @rule(path=paths, kind=st.sampled_from(sorted(fsops.ACL_NAMES)))
    def removeacl(self, path: str, kind: str) -> None:
        outs = self.each(lambda r: os.removexattr(os.path.join(r, path), fsops.ACL_NAMES[kind], follow_symlinks=False))
        kernel = outs.get(self.oracle.name) if self.oracle is not None else None
        model = self.model if differences.model_decides_acl_removal(kernel) else None
        self.expect(f"removeacl {path} {kind}", outs, model)

    # -- open files across operations ----------------------------------------------------------------------------

    @rule(path=paths, writable=st.booleans())
    def fd_open(self, path: str, writable: bool) -> None:
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NONBLOCK
        opened: dict[str, int] = {}

        def op(root: str) -> None:
            fd = os.open(os.path.join(root, path), flags)
            opened[root] = fd

        outs = self.each(op)
        fds = {t.name: opened[str(t.root)] for t in self.targets if str(t.root) in opened}
        if len(fds) == len(self.targets):
            self.fds.append(fds)
        else:
            for fd in fds.values():
                os.close(fd)
        self.expect(f"open {path} {'rw' if writable else 'r'}", outs)

    def on_fd(self, label: str, index: int, op: Callable[[int], Any]) -> None:
        fds = self.fds[index % len(self.fds)]
        outs = {t.name: outcome(lambda t=t: op(fds[t.name])) for t in self.targets}  # type: ignore[misc]
        self.expect(label, outs)

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, 7), offset=offsets)
    def fd_read(self, index: int, offset: int) -> None:
        self.on_fd(f"pread fd#{index}", index, lambda fd: os.pread(fd, 1 << 16, offset))

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, 7), offset=offsets, data=datas)
    def fd_write(self, index: int, offset: int, data: bytes) -> None:
        self.on_fd(f"pwrite fd#{index}", index, lambda fd: os.pwrite(fd, data, offset))

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, 7), size=sizes)
    def fd_truncate(self, index: int, size: int) -> None:
        self.on_fd(f"ftruncate fd#{index}", index, lambda fd: os.ftruncate(fd, size))

    @precondition(lambda self: self.fds)
    @rule(
        index=st.integers(0, 7),
        mode=st.sampled_from(sorted(fsops.FALLOCATE_MODES)),
        offset=offsets,
        length=st.sampled_from((1, 100, 4096, 5000)),
    )
    def fd_fallocate(self, index: int, mode: str, offset: int, length: int) -> None:
        flags = fsops.FALLOCATE_MODES[mode]
        self.on_fd(f"fallocate fd#{index} {mode}", index, lambda fd: fsops.fallocate(fd, flags, offset, length))

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, 7))
    def fd_stat(self, index: int) -> None:
        self.on_fd(f"fstat fd#{index}", index, lambda fd: fsops.stat_fields(os.fstat(fd)))

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, 7))
    def fd_close(self, index: int) -> None:
        fds = self.fds.pop(index % len(self.fds))
        for fd in fds.values():
            os.close(fd)

    def close_fds(self) -> None:
        for fds in self.fds:
            for fd in fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fds = []

    # -- caches and remounts -------------------------------------------------------------------------------------

    @rule()
    def remount(self) -> None:
        self.close_fds()
        assert self.sut is not None
        self.sut.remount()
        if self.oracle is not None:
            self.oracle.remount()

    @precondition(lambda _self: PRIVILEGED)
    @rule()
    def drop_caches(self) -> None:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
