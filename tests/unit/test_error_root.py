"""One error root per package: every error imagebuild raises derives from `ImagebuildError` (with the exit
status the CLI gives), and what reaches the CLI, from imagebuild or from unionfs, is one line and a non-zero exit,
never a traceback."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import imagebuild
import unionfs
from imagebuild.errors import ImagebuildError
from imagebuild.oci import ImageConfig
from imagebuild.store.images import Store

ROOT = Path(__file__).resolve().parents[2]


def imagebuild_modules() -> list[str]:
    return [
        m.name for m in pkgutil.walk_packages(imagebuild.__path__, "imagebuild.") if m.name != "imagebuild.__main__"
    ]


def test_every_imagebuild_error_derives_from_the_root() -> None:
    found = []
    for name in imagebuild_modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException):
                found.append(cls)
                assert issubclass(cls, ImagebuildError), f"{name}.{cls.__name__} does not derive from ImagebuildError"
                assert isinstance(cls.status, int) and cls.status != 0
    assert len(found) >= 10


def test_unionfs_declares_the_errors_a_caller_catches() -> None:
    for error in (unionfs.MountError, unionfs.UnmountError):
        assert issubclass(error, unionfs.ERRORS)


def imagebuild_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagebuild", "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("imagebuild: error: "), done.stderr
    assert done.returncode == 1, (done.returncode, done.stderr)
    return lines[0]


def stored_image(root: Path) -> tuple[Store, str]:
    store = Store(str(root))
    image_id = store.commit(ImageConfig(architecture="amd64", os="linux"), [])
    store.tag(image_id, "plain")
    return store, image_id


def damage(path: str) -> None:
    os.chmod(path, 0o644)
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0x20
    Path(path).write_bytes(bytes(data))


def test_a_corrupt_config_blob_reaching_resolve_is_one_line(tmp_path: Path) -> None:
    store, image_id = stored_image(tmp_path / "store")
    damage(store.blobs.path(image_id))
    for command in (("inspect", "plain"), ("history", "plain"), ("images",), ("export", "plain", "-o", "out")):
        line = one_line(imagebuild_cli(tmp_path / "store", *command))
        assert "damaged" in line and "imagebuild check --repair" in line, line


def test_a_corrupt_manifest_blob_reaching_resolve_is_one_line(tmp_path: Path) -> None:
    store, image_id = stored_image(tmp_path / "store")
    damage(store.blobs.path(store.manifest_digest(image_id)))
    assert "damaged" in one_line(imagebuild_cli(tmp_path / "store", "inspect", "plain"))


def test_a_dockerfile_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_bytes(b"FROM scratch\nLABEL a=\xff\n")
    line = one_line(imagebuild_cli(tmp_path / "store", "build", str(ctx)))
    assert f"{ctx / 'Dockerfile'}:2: not UTF-8" in line, line


def test_a_run_step_whose_mount_fails_leaves_no_scratch_upper(tmp_path: Path) -> None:
    """The mount of a RUN step fails (a layer directory of its base has gone): one line naming the step, and the
    step's scratch directories are removed, its upper among them."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a").write_text("a\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    root = tmp_path / "store"
    assert imagebuild_cli(root, "build", "-t", "base", str(ctx)).returncode == 0
    layers = root / "layers"
    for layer in layers.iterdir():
        layer.rename(tmp_path / layer.name)
    (ctx / "Dockerfile").write_text("FROM base\nRUN true\n")
    line = one_line(imagebuild_cli(root, "build", str(ctx)))
    assert "Dockerfile:2: cannot mount the layers for RUN" in line, line
    assert os.listdir(root / "tmp") == []


def test_a_damaged_cache_entry_is_a_miss(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a").write_text("a\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    root = tmp_path / "store"
    first = imagebuild_cli(root, "build", str(ctx))
    assert first.returncode == 0, first.stderr
    diff_id = next(p.name for p in (root / "layers").iterdir())
    entries = [p for p in (root / "cache").rglob("*.json") if p.parent.name != "summaries"]
    assert len(entries) == 2  # the step's entry and what it saw (and, apart, the image's efficiency summary)
    for damaged in ("{}", "[1]", '{"files": 3}', f'{{"diff_id": "sha256:{diff_id}", "blob": {{"size": "x"}}}}'):
        for entry in entries:
            entry.write_text(damaged)
        again = imagebuild_cli(root, "build", "--explain-cache", str(ctx))
        assert again.returncode == 0 and "cache miss" in again.stdout, (damaged, again.stderr)
