"""Builds of small Dockerfiles: every instruction, the cache, layer sharing, reproducibility and errors."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.image.conftest import Tool, dockerfile


def config(tool: Tool, image: str) -> Any:
    return tool.inspect(image)["Config"]


def test_rebuild_hits_cache_and_gives_the_same_digest_touch_too_but_a_changed_byte_misses(
    tool: Tool, ctx: Path
) -> None:
    dockerfile(ctx, "FROM busybox\nWORKDIR /app\nCOPY . /app\nRUN cat /app/data.txt > /copy.txt\n")
    (ctx / "data.txt").write_text("one\n")
    (ctx / "other.txt").write_text("x\n")
    first = tool.build(ctx, "-t", "cachetest")
    again = tool.build(ctx, "--explain-cache")
    assert tool.image_id(first) == tool.image_id(again)
    assert "Cache: 2 of 2 layer steps reused" in again.stdout
    os.utime(ctx / "data.txt", (1, 1))  # only the mtime changes
    touched = tool.build(ctx, "--explain-cache")
    assert tool.image_id(touched) == tool.image_id(first) and "cache miss" not in touched.stdout
    (ctx / "data.txt").write_text("onE\n")
    changed = tool.build(ctx, "--explain-cache")
    assert tool.image_id(changed) != tool.image_id(first)
    assert any("cache miss: changed: data.txt" in line for line in changed.stdout.splitlines())
    assert "Cache: 0 of 2 layer steps reused" in changed.stdout  # the RUN after it misses too


def test_two_images_from_one_base_store_its_layers_once(tool: Tool, ctx: Path, tmp_path: Path) -> None:
    other = tmp_path / "ctx2"
    other.mkdir()
    dockerfile(ctx, "FROM busybox\nRUN echo a > /a\n")
    dockerfile(other, "FROM busybox\nRUN echo b > /b\n")
    tool.build(ctx, "-t", "share-a")
    tool.build(other, "-t", "share-b")
    a, b, base = (tool.inspect(n)["RootFS"]["Layers"] for n in ("share-a", "share-b", "busybox"))  # type: ignore[index]
    assert a[: len(base)] == b[: len(base)] == base and a[-1] != b[-1]
    stored = set(os.listdir(tool.root / "layers"))
    assert {d.removeprefix("sha256:") for d in base} <= stored  # one directory per layer, shared


def test_steps_that_change_nothing_make_one_layer_twice_and_later_steps_still_mount(
    tool: Tool, ctx: Path, mounted_image: Any
) -> None:
    """Two RUNs that change nothing store the same empty layer twice in the image; unionfs (as overlayfs) refuses
    a directory given twice, so a mount stacks that layer's directory once, which shows the same tree."""
    dockerfile(ctx, "FROM busybox\nRUN true\nRUN true\nRUN echo after > /after\n")
    tool.build(ctx, "-t", "twice")
    layers = tool.inspect("twice")["RootFS"]["Layers"]
    assert layers[-3] == layers[-2]  # type: ignore[index]
    assert (mounted_image("twice") / "after").read_text() == "after\n"


def test_config_instructions(tool: Tool, ctx: Path) -> None:
    dockerfile(
        ctx,
        "ARG BASE=busybox\n"
        "FROM ${BASE}\n"
        "ARG VERSION=1.0\n"
        'ENV APP_VERSION=$VERSION GREETING="hello world"\n'
        'LABEL org.example.title="demo app" version=${VERSION}\n'
        "WORKDIR /srv\n"
        "WORKDIR app\n"
        "USER 1000:1000\n"
        "EXPOSE 5000 53/udp 8000-8001\n"
        'VOLUME ["/data"]\n'
        'SHELL ["/bin/sh", "-ec"]\n'
        "STOPSIGNAL SIGINT\n"
        "HEALTHCHECK --interval=5s --retries=3 CMD wget -q -O- localhost:5000\n"
        "ONBUILD RUN echo triggered\n"
        'ENTRYPOINT ["/bin/sh", "-c"]\n'
        'CMD ["echo hi"]\n',
    )
    tool.build(ctx, "-t", "configured", "--build-arg", "VERSION=2.5")
    c = config(tool, "configured")
    assert "APP_VERSION=2.5" in c["Env"] and "GREETING=hello world" in c["Env"]
    assert c["Labels"] == {"org.example.title": "demo app", "version": "2.5"}
    assert c["WorkingDir"] == "/srv/app" and c["User"] == "1000:1000"
    assert set(c["ExposedPorts"]) == {"5000/tcp", "53/udp", "8000/tcp", "8001/tcp"}
    assert c["Volumes"] == {"/data": {}} and c["Shell"] == ["/bin/sh", "-ec"]
    assert c["StopSignal"] == "SIGINT" and c["OnBuild"] == ["RUN echo triggered"]
    assert c["Healthcheck"]["Interval"] == 5_000_000_000 and c["Healthcheck"]["Retries"] == 3
    assert c["Entrypoint"] == ["/bin/sh", "-c"] and c["Cmd"] == ["echo hi"]
    child = ctx.parent / "child"
    child.mkdir()
    dockerfile(child, "FROM configured\n")
    built = tool.build(child, "-t", "child")
    assert "triggered" in built.stdout  # the base's ONBUILD trigger ran in the child's build
    assert config(tool, "child")["OnBuild"] is None  # and is not inherited further


def test_run_shell_exec_and_heredoc_forms_env_and_workdir(tool: Tool, ctx: Path, mounted_image: Any) -> None:
    dockerfile(
        ctx,
        "FROM busybox\n"
        "ENV WHO=builder\n"
        "WORKDIR /work/dir\n"
        'RUN echo "$WHO in $(pwd)" > out.txt && rm /bin/vi\n'
        'RUN ["/bin/sh", "-c", "echo exec > /exec.txt"]\n'
        "RUN <<END\n"
        "echo heredoc > /heredoc.txt\n"
        "END\n",
    )
    built = tool.build(ctx, "-t", "runner")
    assert "Step 4/6 : RUN" in built.stdout
    root = mounted_image("runner")
    assert (root / "work" / "dir" / "out.txt").read_text() == "builder in /work/dir\n"
    assert (root / "exec.txt").read_text() == "exec\n" and (root / "heredoc.txt").read_text() == "heredoc\n"
    assert not os.path.lexists(root / "bin" / "vi")  # a deletion in a later layer hides the base's file
    assert not os.path.lexists(root / "proc")  # the sandbox's mountpoints are not part of the image


def test_copy_and_add(tool: Tool, ctx: Path, mounted_image: Any) -> None:
    (ctx / "src").mkdir()
    (ctx / "src" / "a.py").write_text("a\n")
    (ctx / "src" / "b.py").write_text("b\n")
    (ctx / "src" / "notes.txt").write_text("n\n")
    (ctx / "secret.env").write_text("TOKEN=x\n")
    (ctx / ".dockerignore").write_text("secret.env\n")
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("pkg/inside.txt")
        payload = b"from the tar\n"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    (ctx / "bundle.tar").write_bytes(data.getvalue())
    dockerfile(
        ctx,
        "FROM busybox AS build\n"
        "RUN mkdir -p /out && echo built > /out/artifact\n"
        "FROM busybox\n"
        "COPY src/*.py /app/\n"
        "COPY --chown=1234:5678 --chmod=0600 src/notes.txt /app/notes.txt\n"
        "COPY src /tree\n"
        "ADD bundle.tar /opt/\n"
        "COPY --from=build /out/artifact /app/artifact\n",
    )
    tool.build(ctx, "-t", "copier")
    root = mounted_image("copier")
    assert sorted(os.listdir(root / "app")) == ["a.py", "artifact", "b.py", "notes.txt"]
    st = os.stat(root / "app" / "notes.txt")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o600)
    assert sorted(os.listdir(root / "tree")) == ["a.py", "b.py", "notes.txt"]
    assert (root / "opt" / "pkg" / "inside.txt").read_text() == "from the tar\n"  # ADD extracted the archive
    assert (root / "app" / "artifact").read_text() == "built\n"
    dockerfile(ctx, "FROM busybox\nCOPY secret.env /\n")
    failed = tool.build(ctx, check=False)
    assert failed.returncode == 1 and "excluded by .dockerignore" in failed.stderr


def test_copy_heredocs(tool: Tool, ctx: Path, mounted_image: Any) -> None:
    dockerfile(
        ctx,
        "FROM busybox\n"
        "ARG WHO=heredoc\n"
        "COPY <<EOF /etc/motd\n"
        "hello from $WHO\n"
        "EOF\n"
        "COPY --chmod=0755 <<'ONE' <<TWO /scripts/\n"
        "echo $literal\n"
        "ONE\n"
        "two $WHO\n"
        "TWO\n",
    )
    tool.build(ctx, "-t", "heredocs", "--build-arg", "WHO=builder")
    root = mounted_image("heredocs")
    assert (root / "etc" / "motd").read_text() == "hello from builder\n"
    assert (root / "scripts" / "ONE").read_text() == "echo $literal\n"  # a quoted delimiter: no expansion
    assert (root / "scripts" / "TWO").read_text() == "two builder\n"
    assert os.stat(root / "scripts" / "ONE").st_mode & 0o777 == 0o755
    again = tool.build(ctx, "-t", "heredocs", "--build-arg", "WHO=builder")
    assert "Cache: 2 of 2 layer steps reused" in again.stdout


def test_multi_stage_target(tool: Tool, ctx: Path) -> None:
    dockerfile(ctx, "FROM busybox AS one\nENV STAGE=one\nFROM busybox AS two\nENV STAGE=two\n")
    tool.build(ctx, "-t", "targeted", "--target", "one")
    assert "STAGE=one" in config(tool, "targeted")["Env"]


def test_mistakes_are_one_line_with_file_and_line_and_leave_no_image(tool: Tool, ctx: Path) -> None:
    before = tool.run("images").stdout
    for text, fragment in (
        ("RUN echo no from\n", "Dockerfile:1:"),
        ("FROM busybox\nRUNN x\n", "Dockerfile:2: unknown instruction 'RUNN'"),
        ("FROM nosuchimage\n", "Dockerfile:1: image 'nosuchimage' is not in the store"),
        ("FROM busybox\nCOPY missing.txt /\n", "Dockerfile:2: COPY source 'missing.txt' not found"),
        ("FROM busybox\nRUN exit 3\n", "Dockerfile:2: RUN failed with exit status 3"),
    ):
        dockerfile(ctx, text)
        done = tool.build(ctx, "-t", "broken", check=False)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], done.stderr
        if "exit 3" in text:
            assert done.returncode == 3
    assert tool.run("images").stdout == before  # no half image
    assert os.listdir(tool.root / "tmp") == []


@pytest.mark.usefixtures("tool")
def test_reproducible_across_stores_and_source_date_epoch(ctx: Path, tmp_path: Path) -> None:
    """With an epoch the same COPY gives the same image in any store, even without the cache; another epoch, another."""
    dockerfile(ctx, "FROM scratch\nCOPY . /\n")
    (ctx / "f").write_text("same\n")
    one = Tool(tmp_path / "store-one")
    two = Tool(tmp_path / "store-two")
    epoch = {"SOURCE_DATE_EPOCH": "1700000000"}
    first = one.image_id(one.run("build", str(ctx), env=epoch))
    assert first == two.image_id(two.run("build", "--no-cache", str(ctx), env=epoch))
    later = Tool(tmp_path / "store-three").run("build", str(ctx), env={"SOURCE_DATE_EPOCH": "1700000001"})
    assert one.image_id(later) != first


def test_user_applies_to_run_and_to_run_command(tool: Tool, ctx: Path, mounted_image: Any) -> None:
    dockerfile(
        ctx,
        "FROM busybox\n"
        "RUN mkdir -p /etc /home/app && echo 'app:x:1000:1000::/home/app:/bin/sh' > /etc/passwd"
        " && echo 'app:x:1000:' > /etc/group && chown 1000:1000 /home/app\n"
        "USER app\n"
        "RUN id -u > /home/app/uid && touch /home/app/mine\n"
        'CMD ["id", "-u"]\n',
    )
    tool.build(ctx, "-t", "withuser")
    root = mounted_image("withuser")
    assert (root / "home" / "app" / "uid").read_text() == "1000\n"
    assert os.stat(root / "home" / "app" / "mine").st_uid == 1000
    assert tool.run("run", "--rm", "withuser").stdout.strip() == "1000"
    dockerfile(ctx, "FROM withuser\nRUN touch /etc/not-yours\n")
    denied = tool.build(ctx, check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stdout  # USER is not root


def test_from_an_oci_layout_and_store_commands(tool: Tool, ctx: Path, tmp_path: Path, mounted_image: Any) -> None:
    layout = tmp_path / "layout"
    tool.run("export", "busybox", "-o", str(layout))
    dockerfile(ctx, f"FROM oci:{layout}:busybox:latest\nRUN echo from-layout > /origin\n")
    fresh = Tool(tmp_path / "fresh")
    fresh.build(ctx, "-t", "fromlayout")
    assert fresh.inspect("fromlayout")["RootFS"]["Layers"][:2] == tool.inspect("busybox")["RootFS"]["Layers"]  # type: ignore[index]
    fresh.run("tag", "fromlayout", "second:v1")
    listing = fresh.run("images").stdout
    assert "second" in listing and "fromlayout" in listing
    fresh.run("rmi", "fromlayout")
    assert "fromlayout" not in fresh.run("images").stdout and "second" in fresh.run("images").stdout
    fresh.run("rmi", "second:v1")
    pruned = fresh.run("prune").stdout
    assert "Deleted" in pruned
    kept = {layer.removeprefix("sha256:") for layer in fresh.inspect(next(iter(_ids(fresh))))["RootFS"]["Layers"]}  # type: ignore[index]
    assert set(os.listdir(fresh.root / "layers")) == kept  # only the imported base's layers remain
    # a mount with a container layer keeps its changes across mounts until the container is removed
    point = tmp_path / "rw"
    point.mkdir()
    tool.run("mount", "--name", "keep", "busybox", str(point))
    (point / "note").write_text("kept\n")
    tool.run("umount", str(point))
    tool.run("mount", "--name", "keep", "busybox", str(point))
    try:
        assert (point / "note").read_text() == "kept\n"
    finally:
        tool.run("umount", str(point))
    assert not (mounted_image("busybox") / "note").exists()  # the image itself is unchanged


def _ids(tool: Tool) -> list[str]:
    lines = tool.run("images").stdout.splitlines()[1:]
    return [line.split()[2] for line in lines]
