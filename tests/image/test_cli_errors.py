"""Plain wrong input on the command line: one line `imagebuild: error: ...` (or `unionfs: error: ...`) saying what,
where and what to do, a non-zero exit, never a traceback or argparse's usage block, and nothing changed."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.image.conftest import Tool, dockerfile
from tests.support import UNIONFS, is_mounted, snapshot


def one_line(done: subprocess.CompletedProcess[str], status: int, program: str = "imagebuild") -> str:
    """The single error line of a failed command, after checking the exit status and that nothing else was said."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{program}: error: "), done.stderr
    assert done.returncode == status, (done.returncode, done.stderr)
    return lines[0]


def bare(tmp_path: Path) -> Tool:
    """A tool on an empty store of its own: for errors that come before any image is read."""
    return Tool(tmp_path / "store")


def unionfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*UNIONFS, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def mounts(tool: Tool) -> Iterator[list[Path]]:
    """Mount points a test mounts on: unmounted afterwards, whatever the test's outcome."""
    points: list[Path] = []
    yield points
    for point in points:
        if is_mounted(point):
            tool.run("umount", str(point), check=False)
        if is_mounted(point):
            subprocess.run(["fusermount3", "-uz", str(point)], capture_output=True)


# -- import ----------------------------------------------------------------------------------------------------------


def archive(tool: Tool, tmp_path: Path) -> bytes:
    path = tmp_path / "busybox.tar"
    tool.run("export", "busybox", "--format", "docker-archive", "-o", str(path))
    return path.read_bytes()


def junk(tool: Tool, tmp_path: Path) -> Path:  # noqa: ARG001 (every case builder takes the same arguments)
    path = tmp_path / "x.tar"
    path.write_bytes(bytes(range(256)) * 8)
    return path


def empty(tool: Tool, tmp_path: Path) -> Path:  # noqa: ARG001 (every case builder takes the same arguments)
    path = tmp_path / "empty.tar"
    path.write_bytes(b"")
    return path


def tar_without_manifest(tool: Tool, tmp_path: Path) -> Path:  # noqa: ARG001 (every case builder takes the same arguments)
    path = tmp_path / "files.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    return path


def directory_without_layout(tool: Tool, tmp_path: Path) -> Path:  # noqa: ARG001 (every case builder takes the same arguments)
    path = tmp_path / "somedir"
    path.mkdir()
    (path / "index.json").write_text("{}")
    return path


def truncated_tar(tool: Tool, tmp_path: Path) -> Path:
    path = tmp_path / "cut.tar"
    path.write_bytes(archive(tool, tmp_path)[:300_000])
    return path


def truncated_gzip(tool: Tool, tmp_path: Path) -> Path:
    path = tmp_path / "cut.tar.gz"
    path.write_bytes(gzip.compress(archive(tool, tmp_path))[:200_000])
    return path


def truncated_gzip_header(tool: Tool, tmp_path: Path) -> Path:
    path = tmp_path / "stub.tar.gz"
    path.write_bytes(gzip.compress(archive(tool, tmp_path))[:100])
    return path


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (junk, "is neither an OCI layout directory nor a docker-archive tarball: it is not a tar archive"),
        (empty, "is neither an OCI layout directory nor a docker-archive tarball: it is empty"),
        (tar_without_manifest, "is neither an OCI layout directory nor a docker-archive tarball: it is a tar archive"),
        (directory_without_layout, "is neither an OCI layout directory nor a docker-archive tarball: it is a dir"),
        (truncated_tar, "is a truncated or corrupt tarball"),
        (truncated_gzip, "is a truncated or corrupt tarball"),
        (truncated_gzip_header, "is a truncated or corrupt tarball"),
    ],
)
def test_import_of_what_is_no_image_names_the_file_and_leaves_the_store_as_it_was(
    tool: Tool, tmp_path: Path, make: Callable[[Tool, Path], Path], says: str
) -> None:
    path = make(tool, tmp_path)
    before = snapshot(tool.root)
    line = one_line(tool.run("import", str(path), "-t", "imported:bad", check=False), 1)
    assert line.startswith(f"imagebuild: error: '{path}' {says}") and line.endswith("nothing was imported")
    assert snapshot(tool.root) == before


def test_import_with_a_bad_tag_imports_nothing(tool: Tool, tmp_path: Path) -> None:
    path = tmp_path / "busybox.tar"
    path.write_bytes(archive(tool, tmp_path))
    before = snapshot(tool.root)
    line = one_line(tool.run("import", str(path), "-t", "Bad Name!", check=False), 1)
    assert line.startswith("imagebuild: error: -t 'Bad Name!' is not an image name: use lowercase letters")
    assert snapshot(tool.root) == before


# -- build, lint -----------------------------------------------------------------------------------------------------


def test_build_of_a_missing_context_names_the_context(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "context"
    line = one_line(bare(tmp_path).build(missing, check=False), 1)
    assert line == f"imagebuild: error: build context '{missing}' does not exist: give the directory to build from"


def test_build_of_a_file_as_context_says_it_is_not_a_directory(tmp_path: Path, ctx: Path) -> None:
    path = dockerfile(ctx, "FROM busybox\n") / "Dockerfile"
    line = one_line(bare(tmp_path).build(path, check=False), 1)
    assert line.startswith(f"imagebuild: error: build context '{path}' is not a directory: give the directory")


def test_build_with_a_missing_dash_f_names_that_file(tmp_path: Path, ctx: Path) -> None:
    missing = tmp_path / "elsewhere" / "Dockerfile.prod"
    line = one_line(bare(tmp_path).build(ctx, "-f", str(missing), check=False), 1)
    assert line == f"imagebuild: error: -f '{missing}' does not exist: name the Dockerfile to use"


def test_lint_of_a_missing_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    line = one_line(bare(tmp_path).run("lint", str(missing), check=False), 1)
    assert line == f"imagebuild: error: build context '{missing}' does not exist: give the directory to build from"


# -- mount, umount ---------------------------------------------------------------------------------------------------


def test_mount_makes_a_missing_mount_point_with_its_parents_and_umount_undoes_it(
    tool: Tool, tmp_path: Path, mounts: list[Path]
) -> None:
    point = tmp_path / "new" / "rootfs"
    mounts.append(point)
    done = tool.run("mount", "busybox", str(point), check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert is_mounted(point) and (point / "bin" / "busybox").is_file()
    tool.run("umount", str(point))
    assert not is_mounted(point)


@pytest.mark.parametrize("kind", ["file", "not empty", "mounted"])
def test_mount_on_what_cannot_take_a_mount_is_one_line(
    tool: Tool, tmp_path: Path, mounts: list[Path], kind: str
) -> None:
    point = tmp_path / "point"
    mounts.append(point)  # unmounted afterwards, should the refused mount have been made after all
    if kind == "file":
        point.write_text("x")
        says = f"mount point '{point}' is not a directory: give an empty directory or a new path"
    elif kind == "not empty":
        point.mkdir()
        (point / "keep.txt").write_text("mine\n")
        says = f"mount point '{point}' is not empty: give an empty directory or a new path"
    else:
        point.mkdir()
        tool.run("mount", "--read-only", "busybox", str(point))
        says = f"'{point}' is already a mount point: unmount it first (imagebuild umount {point})"
    line = one_line(tool.run("mount", "--read-only", "busybox", str(point), check=False), 1)
    assert line.startswith(f"imagebuild: error: {says}")
    assert is_mounted(point) == (kind == "mounted")
    if kind == "not empty":
        assert (point / "keep.txt").read_text() == "mine\n"


def test_umount_of_what_is_not_mounted_says_nothing_to_do_and_exits_2(tmp_path: Path) -> None:
    point = tmp_path / "rootfs"
    point.mkdir()
    line = one_line(bare(tmp_path).run("umount", str(point), check=False), 2)
    assert line == f"imagebuild: error: '{point}' is not mounted: nothing to do"
    assert (
        one_line(unionfs("umount", str(point)), 2, "unionfs")
        == f"unionfs: error: '{point}' is not mounted: nothing to do"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_umount_leaves_a_mount_imagebuild_did_not_make(tmp_path: Path) -> None:
    point = tmp_path / "tmpfs"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(point)], check=True)
    try:
        line = one_line(bare(tmp_path).run("umount", str(point), check=False), 1)
        assert (
            line == f"imagebuild: error: '{point}' is a tmpfs mount, not one 'imagebuild mount' made: it stays mounted"
        )
        assert is_mounted(point)
    finally:
        if is_mounted(point):
            subprocess.run(["umount", str(point)], check=False)


# -- names, export, the store ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Bad Name!", "", "UPPER"])
def test_tag_with_a_bad_name_is_refused(tool: Tool, name: str) -> None:
    before = tool.run("images").stdout
    line = one_line(tool.run("tag", "busybox", name, check=False), 1)
    assert line.startswith(f"imagebuild: error: '{name}' is not an image name: use lowercase letters, digits")
    assert tool.run("images").stdout == before


def test_export_of_a_tarball_into_a_missing_directory_names_it(tool: Tool, tmp_path: Path) -> None:
    out = tmp_path / "nonexistent" / "app.tar"
    line = one_line(tool.run("export", "busybox", "--format", "docker-archive", "-o", str(out), check=False), 1)
    assert line == f"imagebuild: error: -o '{out}': the directory '{out.parent}' does not exist: create it first"


def test_export_of_a_tarball_onto_a_directory_leaves_nothing_behind(tool: Tool, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    line = one_line(tool.run("export", "busybox", "--format", "docker-archive", "-o", str(out), check=False), 1)
    assert line.startswith(f"imagebuild: error: -o '{out}' is a directory: give the tarball's file name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not any(out.iterdir())


@pytest.mark.parametrize("kind", ["file", "other files", "bad index"])
def test_export_of_a_layout_where_no_layout_can_go_writes_nothing(tool: Tool, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("x")
        says = f"'{out}' exists and is not a directory"
    elif kind == "other files":
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
        says = f"'{out}' is a directory that is not an OCI layout (no oci-layout file)"
    else:
        out.mkdir()
        (out / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        (out / "index.json").write_text("not json")
        says = f"'{out}': its index.json is not an OCI image index"
    before = snapshot(tmp_path)
    line = one_line(tool.run("export", "busybox", "-o", str(out), check=False), 1)
    assert line.startswith(f"imagebuild: error: {says}")
    assert snapshot(tmp_path) == before


def test_a_store_that_is_a_file_is_named(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.write_text("x")
    line = one_line(bare(tmp_path).run("images", check=False), 1)
    assert line == (
        f"imagebuild: error: the image store '{root}' is not a directory: point --root (or $IMAGEBUILD_ROOT) at a "
        "directory"
    )


# -- the command line itself -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["build", "--frobnicate", "."], "unrecognized arguments: --frobnicate (see 'imagebuild build --help')"),
        (["--frobnicate", "images"], "unrecognized arguments: --frobnicate (see 'imagebuild --help')"),
        (["images", "extra"], "unrecognized arguments: extra (see 'imagebuild images --help')"),
        (["run", "--frobnicate", "busybox"], "unrecognized arguments: --frobnicate (see 'imagebuild run --help')"),
        (["mount", "busybox"], "the following arguments are required: mountpoint (see 'imagebuild mount --help')"),
        (["export", "busybox"], "the following arguments are required: -o/--output (see 'imagebuild export --help')"),
        (["build"], "the following arguments are required: CONTEXT (see 'imagebuild build --help')"),
        ([], "the following arguments are required: COMMAND (see 'imagebuild --help')"),
        (["lint", "--fail-on", "never"], "argument --fail-on: invalid choice: 'never' (choose from"),
        (["analyze", "busybox", "--layer", "x"], "argument --layer: invalid int value: 'x'"),
        (["build", "--jobs", "0", "."], "argument --jobs: '0' is not a number of stages (1 or more), e.g. --jobs 4"),
        (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate' (choose from "),  # quoting varies by Python
    ],
)
def test_a_command_line_argparse_refuses_is_one_line_and_status_2(tmp_path: Path, argv: list[str], says: str) -> None:
    line = one_line(bare(tmp_path).run(*argv, check=False), 2)
    assert line.startswith(f"imagebuild: error: {says}")
    assert not (tmp_path / "store").exists()  # refused before the store is touched
    command = [a for a in argv[:1] if a not in ("--frobnicate", "frobnicate")]
    helped = bare(tmp_path).run(*command, "--help", check=False)  # --help still prints the usage and options
    assert helped.returncode == 0 and helped.stderr == ""
    assert helped.stdout.startswith(f"usage: {' '.join(['imagebuild', *command])} [-h]")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["mount", "--frobnicate", "/mnt"], "unrecognized arguments: --frobnicate (see 'unionfs mount --help')"),
        (["mount"], "the following arguments are required: mountpoint (see 'unionfs mount --help')"),
        (["umount", "--frobnicate", "/mnt"], "unrecognized arguments: --frobnicate (see 'unionfs umount --help')"),
        (["umount"], "the following arguments are required: mountpoint (see 'unionfs umount --help')"),
        (["stress", "--processes", "x", "/mnt"], "argument --processes: invalid int value: 'x'"),
        (
            ["-o", "lowerdir=/tmp", "--frobnicate", "/mnt"],
            "unrecognized arguments: --frobnicate (see 'unionfs --help')",
        ),
        (["frobnicate"], "unknown command 'frobnicate': use mount, umount or stress (see 'unionfs --help')"),
        ([], "no command: use mount, umount or stress (see 'unionfs --help')"),
    ],
)
def test_unionfs_command_line_errors_are_one_line_and_status_2(argv: list[str], says: str) -> None:
    line = one_line(unionfs(*argv), 2, "unionfs")
    assert line.startswith(f"unionfs: error: {says}")
    command = [a for a in argv[:1] if a in ("mount", "umount", "stress")]
    helped = unionfs(*command, "--help")  # --help still prints the usage (and the options)
    assert helped.returncode == 0 and helped.stderr == ""
    assert helped.stdout.startswith(f"usage: {' '.join(['unionfs', *command])} ")
