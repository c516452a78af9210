"""RUN --mount (cache, secret, bind, tmpfs) and build --secret, in real builds as root: nothing of a mount in the
layer, no secret anywhere in the store, caches kept between builds and removed by `prune --cache`."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from imagebuild import sandbox
from tests.image.conftest import IMAGEBUILD, Tool, dockerfile


def layer_dir(tool: Tool, image: str, index: int = -1) -> Path:
    layers: list[str] = tool.inspect(image)["RootFS"]["Layers"]  # type: ignore[index,assignment]
    return tool.root / "layers" / layers[index].removeprefix("sha256:")


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def own_store(tool: Tool, tmp_path: Path) -> Tool:
    """A store of the test's own (prune touches the whole store), with the busybox base in it."""
    mine = Tool(tmp_path / "own-store")
    export = tmp_path / "busybox.tar"
    tool.run("export", "busybox", "--format", "docker-archive", "-o", str(export))
    mine.run("import", str(export), "-t", "busybox")
    return mine


def test_cache_mount_keeps_its_content_between_builds_out_of_the_layer_and_prune_cache_removes_it(
    tool: Tool, ctx: Path, tmp_path: Path
) -> None:
    mine = own_store(tool, tmp_path)
    dockerfile(
        ctx,
        "FROM busybox\n"
        "RUN --mount=type=cache,target=/var/cache/thing echo built >> /var/cache/thing/log "
        "&& wc -l < /var/cache/thing/log > /count\n"
        "RUN --mount=type=cache,id=/var/cache/thing,target=/other cat /other/log > /seen-by-id\n",
    )
    first = mine.build(ctx, "-t", "cached", "--no-cache")
    assert tree(layer_dir(mine, "cached", -2)) == ["count"]  # the cache's directory and its log are not there
    assert (layer_dir(mine, "cached", -2) / "count").read_text().strip() == "1"
    second = mine.build(ctx, "-t", "cached", "--no-cache")
    assert (layer_dir(mine, "cached", -2) / "count").read_text().strip() == "2"  # the cache outlived the build
    assert (layer_dir(mine, "cached") / "seen-by-id").read_text() == "built\nbuilt\n"  # same id, same cache
    assert mine.image_id(first) != mine.image_id(second)
    pruned = mine.run("prune", "--cache")
    line = next(x for x in pruned.stdout.splitlines() if "RUN caches" in x)
    assert line.startswith("Deleted 1 RUN caches, freed ") and not line.endswith(" 0B"), pruned.stdout
    assert not list((mine.root / "caches").iterdir())
    mine.build(ctx, "-t", "cached", "--no-cache")
    assert (layer_dir(mine, "cached", -2) / "count").read_text().strip() == "1"  # a fresh cache


def test_cache_mount_content_is_not_in_the_cache_key(tool: Tool, ctx: Path) -> None:
    dockerfile(ctx, "FROM busybox\nRUN --mount=type=cache,target=/c,id=key-test date >> /c/log; echo done > /d\n")
    first = tool.build(ctx, "-t", "cache-key")
    again = tool.build(ctx, "-t", "cache-key")
    assert tool.image_id(first) == tool.image_id(again) and "Cache: 1 of 1 layer steps reused" in again.stdout
    assert [p.read_text().count("\n") for p in (tool.root / "caches").rglob("log")] == [1]  # it did use the cache


def test_cache_mount_owner_and_mode_as_given(tool: Tool, ctx: Path) -> None:
    dockerfile(
        ctx,
        "FROM busybox\n"
        "RUN --mount=type=cache,target=/c,id=owned-test,uid=1234,gid=2345,mode=0700 stat -c '%u %g %a' /c > /st\n",
    )
    tool.build(ctx, "-t", "cache-owner", "--no-cache")
    assert (layer_dir(tool, "cache-owner") / "st").read_text() == "1234 2345 700\n"


def _grep_store(root: Path, needle: bytes) -> list[str]:
    """Every file under the store holding `needle`, gzip blobs read uncompressed too."""
    found = []
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            with contextlib.suppress(OSError, EOFError):
                data += gzip.decompress(data)
        if needle in data:
            found.append(str(path))
    return found


def test_secret_is_read_by_its_run_and_found_nowhere_in_the_store(tool: Tool, ctx: Path, tmp_path: Path) -> None:
    value = "s3cret-" + secrets.token_hex(16)
    source = tmp_path / "token.txt"
    source.write_text(value)
    dockerfile(
        ctx,
        "FROM busybox\n"
        "RUN --mount=type=secret,id=token sha256sum /run/secrets/token | cut -d' ' -f1 > /file-digest "
        "&& stat -c '%u %a' /run/secrets/token > /file-mode\n"
        "RUN --mount=type=secret,id=api,env=API_TOKEN "
        "printf %s \"$API_TOKEN\" | sha256sum | cut -d' ' -f1 > /env-digest\n"
        "RUN --mount=type=secret,id=token,target=/etc/app/token,mode=0440,uid=7 stat -c '%u %a' /etc/app/token > /m\n"
        "RUN ls /run /etc/app 2>&1 > /left || true\n",
    )
    digest = hashlib.sha256(value.encode()).hexdigest()
    built = tool.run(
        "build",
        "-t",
        "secret-test",
        "--secret",
        f"id=token,src={source}",
        "--secret",
        "id=api,env=API_SECRET",
        str(ctx),
        env={"API_SECRET": value},
    )
    assert (layer_dir(tool, "secret-test", -4) / "file-digest").read_text().strip() == digest
    assert (layer_dir(tool, "secret-test", -4) / "file-mode").read_text() == "0 400\n"
    assert (layer_dir(tool, "secret-test", -3) / "env-digest").read_text().strip() == digest
    assert (layer_dir(tool, "secret-test", -2) / "m").read_text() == "7 440\n"
    assert tree(layer_dir(tool, "secret-test", -4)) == ["file-digest", "file-mode"]  # no /run/secrets
    assert tree(layer_dir(tool, "secret-test", -2)) == ["m"]  # no /etc/app
    assert value not in built.stdout + built.stderr
    assert _grep_store(tool.root, value.encode()) == []
    # another value of the secret is no reason to run the steps again: its content is not in the cache key
    source.write_text("another value")
    again = tool.run(
        "build",
        "--secret",
        f"id=token,src={source}",
        "--secret",
        "id=api,env=API_SECRET",
        str(ctx),
        env={"API_SECRET": "another"},
    )
    assert "Cache: 4 of 4 layer steps reused" in again.stdout


def test_a_missing_required_secret_is_one_line_and_an_optional_one_is_no_mount(tool: Tool, ctx: Path) -> None:
    dockerfile(ctx, "FROM busybox\nRUN --mount=type=secret,id=absent,required=true cat /run/secrets/absent\n")
    failed = tool.build(ctx, "--no-cache", check=False)
    assert failed.returncode != 0
    assert failed.stderr.count("\n") == 1 and "Dockerfile:2" in failed.stderr and "absent" in failed.stderr
    assert "--secret id=absent" in failed.stderr and "Traceback" not in failed.stderr
    dockerfile(ctx, "FROM busybox\nRUN --mount=type=secret,id=absent test ! -e /run/secrets/absent\n")
    tool.build(ctx, "--no-cache")


def test_bind_mounts_from_a_stage_and_the_context_leave_nothing_and_rw_changes_are_discarded(
    tool: Tool, ctx: Path
) -> None:
    (ctx / "data").mkdir()
    (ctx / "data" / "input.txt").write_text("from the context\n")
    (ctx / "ignored.txt").write_text("not for the build\n")
    (ctx / ".dockerignore").write_text("ignored.txt\n")
    dockerfile(
        ctx,
        "FROM busybox AS tools\n"
        "RUN mkdir /out && echo from the stage > /out/made.txt\n"
        "FROM busybox\n"
        "RUN --mount=type=bind,from=tools,source=/out,target=/mnt/tools "
        "--mount=target=/src cat /mnt/tools/made.txt /src/data/input.txt > /both; ls /src > /listed\n"
        "RUN --mount=type=bind,from=tools,source=/out,target=/mnt/tools,rw --mount=type=bind,target=/src,rw "
        "echo changed > /mnt/tools/made.txt && echo changed > /src/data/input.txt && touch /src/new\n"
        "RUN --mount=type=bind,from=tools,source=/out/made.txt,target=/made.txt "
        "--mount=target=/src cat /made.txt /src/data/input.txt > /after; ls /src > /listed-after\n"
        "RUN --mount=target=/ro touch /ro/x 2> /ro-error || echo refused > /ro-result\n",
    )
    tool.build(ctx, "-t", "binds")
    assert tree(layer_dir(tool, "binds", -4)) == ["both", "listed"]  # no /mnt, no /src
    assert (layer_dir(tool, "binds", -4) / "both").read_text() == "from the stage\nfrom the context\n"
    assert (layer_dir(tool, "binds", -4) / "listed").read_text() == "Dockerfile\ndata\n"  # not ignored.txt
    assert tree(layer_dir(tool, "binds", -3)) == []  # the rw changes went nowhere
    assert (layer_dir(tool, "binds", -2) / "after").read_text() == "from the stage\nfrom the context\n"
    assert (layer_dir(tool, "binds", -2) / "listed-after").read_text() == "Dockerfile\ndata\n"
    assert (ctx / "data" / "input.txt").read_text() == "from the context\n" and not (ctx / "new").exists()
    assert (layer_dir(tool, "binds") / "ro-result").read_text() == "refused\n"  # read-only by default


def test_bind_from_context_is_in_the_cache_key(tool: Tool, ctx: Path) -> None:
    (ctx / "input.txt").write_text("one\n")
    dockerfile(ctx, "FROM busybox\nRUN --mount=target=/src cp /src/input.txt /copy\n")
    tool.build(ctx, "-t", "bind-key")
    (ctx / "input.txt").write_text("two\n")
    again = tool.build(ctx, "-t", "bind-key")
    assert "Cache: 0 of 1 layer steps reused" in again.stdout
    assert (layer_dir(tool, "bind-key") / "copy").read_text() == "two\n"


def test_tmpfs_is_empty_and_leaves_nothing(tool: Tool, ctx: Path) -> None:
    dockerfile(
        ctx,
        "FROM busybox\n"
        "RUN mkdir -p /scratch && echo image > /scratch/below\n"
        "RUN --mount=type=tmpfs,target=/scratch,size=1m ls -A /scratch > /listed; echo big > /scratch/file; "
        "df -k /scratch | tail -1 | awk '{print $1, $2}' > /df\n"
        "RUN --mount=type=tmpfs,target=/new/place touch /new/place/x\n",
    )
    tool.build(ctx, "-t", "tmpfs-test")
    assert (layer_dir(tool, "tmpfs-test", -2) / "listed").read_text() == ""  # the image's /scratch is hidden
    assert (layer_dir(tool, "tmpfs-test", -2) / "df").read_text() == "tmpfs 1024\n"
    assert tree(layer_dir(tool, "tmpfs-test", -2)) == ["df", "listed"]
    assert tree(layer_dir(tool, "tmpfs-test")) == []  # /new/place was made for the mount alone


def test_targets_made_for_a_mount_leave_no_trace_and_their_parents_keep_their_metadata(tool: Tool, ctx: Path) -> None:
    dockerfile(
        ctx,
        "FROM busybox\n"
        "RUN mkdir -m 0700 /opt && touch -d @1000000000 /opt\n"
        "RUN --mount=type=tmpfs,target=/opt/a/b stat -c '%a %Y' /opt > /seen; "
        "awk '$2 == \"/opt/a/b\" {print $3}' /proc/mounts >> /seen\n"
        "RUN --mount=type=cache,target=/opt/a/b,id=trace-test touch /opt/new\n",
    )
    tool.build(ctx, "-t", "traces")
    assert (layer_dir(tool, "traces", -2) / "seen").read_text() == "700 1000000000\ntmpfs\n"
    assert tree(layer_dir(tool, "traces", -2)) == ["seen"]
    assert tree(layer_dir(tool, "traces")) == ["opt", "opt/new"]  # no opt/a
    assert oct((layer_dir(tool, "traces") / "opt").stat().st_mode & 0o7777) == "0o700"


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        ("type=nfs,target=/x", "unknown --mount type 'nfs'"),
        ("type=cache", "needs a target"),
        ("type=bind,from=nowhere,target=/x", "nowhere"),
        ("type=cache,target=/x,sharing=sometimes", "unknown --mount sharing 'sometimes'"),
        ("type=tmpfs,target=/x,colour=red", "unknown --mount field 'colour'"),
    ],
)
def test_bad_mount_values_are_one_line_naming_the_dockerfile_line(
    tool: Tool, ctx: Path, mount: str, message: str
) -> None:
    dockerfile(ctx, f"FROM busybox\nRUN true\nRUN --mount={mount} true\n")
    failed = tool.build(ctx, check=False)
    assert failed.returncode != 0
    assert failed.stderr.count("\n") == 1 and "Dockerfile:3: " in failed.stderr and message in failed.stderr
    assert "Traceback" not in failed.stderr


def test_several_mounts_and_a_user(tool: Tool, ctx: Path, tmp_path: Path) -> None:
    source = tmp_path / "s"
    source.write_text("for the user\n")
    dockerfile(
        ctx,
        "FROM busybox\n"
        "RUN echo 'u:x:1000:1000::/home/u:/bin/sh' >> /etc/passwd && mkdir -p /home/u && chown 1000:1000 /home/u\n"
        "USER u\n"
        "RUN --mount=type=secret,id=s,uid=1000 --mount=type=cache,target=/home/u/.cache,uid=1000,id=user-test "
        "--mount=type=tmpfs,target=/tmp/t "
        "cat /run/secrets/s > /home/u/got && touch /home/u/.cache/ok /tmp/t/ok && id -u > /home/u/id\n",
    )
    tool.run("build", "-t", "mount-user", "--no-cache", "--secret", f"id=s,src={source}", str(ctx))
    # a USER step's layer holds an empty /etc with or without mounts (where the name files are bound): not ours
    assert [p for p in tree(layer_dir(tool, "mount-user")) if p != "etc"] == [
        "home",
        "home/u",
        "home/u/got",
        "home/u/id",
    ]
    assert (layer_dir(tool, "mount-user") / "home/u/id").read_text() == "1000\n"


@pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="the Debian base needs mmdebstrap")
def test_pip_behind_a_cache_mount_is_faster_the_second_time(tool: Tool, tmp_path: Path) -> None:
    import time

    from tests.realworld.builders import CA_BUNDLE, prepare_context

    base = prepare_context("base", tmp_path)
    tool.build(base, "-t", "debian:bookworm")
    pyctx = tmp_path / "py"
    pyctx.mkdir()
    shutil.copy(CA_BUNDLE, pyctx / "site-ca.crt")
    dockerfile(
        pyctx,
        "FROM debian:bookworm\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends python3-venv\n"
        "COPY site-ca.crt /etc/ssl/site-ca.crt\n"
        "ENV PIP_CERT=/etc/ssl/site-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1\n"
        "RUN python3 -m venv /venv\n",
    )
    tool.build(pyctx, "-t", "pybase")
    app = tmp_path / "app"
    app.mkdir()
    # packages PyPI has as sources only: pip builds each into a wheel (a build environment of its own, setuptools
    # downloaded into it), and keeps the wheels in its cache; the second time it takes them from there
    dockerfile(
        app,
        "FROM pybase\n"
        "RUN --mount=type=cache,target=/root/.cache/pip /venv/bin/pip install --use-pep517 "
        "docopt==0.6.2 sgmllib3k==1.0.0 wget==3.2 pathtools==0.1.2 antlr4-python3-runtime==4.9.3\n",
    )
    timings = []
    outputs = []
    for _ in range(2):
        started = time.monotonic()
        outputs.append(tool.build(app, "-t", "pipapp", "--no-cache").stdout)
        timings.append(time.monotonic() - started)
    print(f"pip install behind a cache mount, --no-cache: first {timings[0]:.1f} s, second {timings[1]:.1f} s")
    assert "Building wheel for docopt" in outputs[0]
    assert "Using cached docopt-0.6.2" in outputs[1] and "Building wheel" not in outputs[1]
    assert timings[1] < timings[0] * 0.7, timings
    layer = layer_dir(tool, "pipapp")
    assert (layer / "venv").is_dir() and not (layer / "root").exists()  # no /root/.cache/pip, nothing of it


def test_a_new_cache_starts_from_its_from_source(tool: Tool, ctx: Path) -> None:
    dockerfile(
        ctx,
        "FROM busybox AS seed\n"
        "RUN mkdir /out && echo seeded > /out/first.txt\n"
        "FROM busybox\n"
        "RUN --mount=type=cache,target=/c,id=seeded-test,from=seed,source=/out cat /c/first.txt > /got "
        "&& echo later >> /c/first.txt\n",
    )
    tool.build(ctx, "-t", "seeded", "--no-cache")
    assert (layer_dir(tool, "seeded") / "got").read_text() == "seeded\n"
    tool.build(ctx, "-t", "seeded", "--no-cache")  # an existing cache keeps its own content
    assert (layer_dir(tool, "seeded") / "got").read_text() == "seeded\nlater\n"


def test_a_mount_inside_another(tool: Tool, ctx: Path, tmp_path: Path) -> None:
    (tmp_path / "s").write_text("nested secret\n")
    dockerfile(
        ctx,
        "FROM busybox\n"
        "RUN --mount=type=cache,target=/a,id=nest-test --mount=type=tmpfs,target=/a/b "
        "--mount=type=secret,id=s,target=/a/b/s cat /a/b/s > /got\n",
    )
    tool.run("build", "-t", "nested", "--secret", f"id=s,src={tmp_path / 's'}", str(ctx))
    assert (layer_dir(tool, "nested") / "got").read_text() == "nested secret\n"
    assert tree(layer_dir(tool, "nested")) == ["got"]


def test_a_killed_builds_secret_is_named_by_check_and_removed_by_repair(tool: Tool, ctx: Path, tmp_path: Path) -> None:
    value = "killed-" + secrets.token_hex(16)
    source = tmp_path / "token.txt"
    source.write_text(value)
    dockerfile(ctx, "FROM busybox\nRUN --mount=type=secret,id=token cat /run/secrets/token >/dev/null && sleep 60\n")
    command = [*IMAGEBUILD, "--root", str(tool.root), "build", "--no-cache", "--secret", f"id=token,src={source}"]
    build = subprocess.Popen([*command, str(ctx)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    private = ""
    try:
        deadline = time.monotonic() + 60
        while not private and time.monotonic() < deadline:  # the RUN's private dir, once its secret is written
            found = [str(p) for p in Path(sandbox.private_base()).glob(f"imagebuild-run-{build.pid}-*")]
            private = found[0] if found and any(Path(found[0]).rglob("*")) else ""
            time.sleep(0.2)
        assert private, "the RUN never started"
    finally:
        build.kill()  # SIGKILL: nothing of imagebuild's own can clean up
        build.communicate()
    assert any(value in p.read_text() for p in Path(private).rglob("*") if p.is_file())  # what was left
    found = tool.run("check", check=False)
    left = f"the private files (secrets, name files) of an interrupted RUN or run are left at {private}"
    assert found.returncode != 0 and left in found.stdout + found.stderr
    tool.run("check", "--repair")
    assert not os.path.lexists(private)
    assert tool.run("check").returncode == 0
