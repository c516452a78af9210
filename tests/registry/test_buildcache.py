"""The build cache shared through a real registry on 127.0.0.1: --cache-to in one store, --cache-from in others.

A RUN that runs prints its marker line under its step number; one the cache serves prints nothing. Every store
but the first starts empty, as a fresh CI machine does: its base comes from the registry (a pull, no RUN).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.image.conftest import Tool, dockerfile
from tests.registry.conftest import Registry

SINGLE = """\
FROM {base}
COPY a.txt /a.txt
RUN echo ran-one && cat /a.txt > /one
COPY b.txt /b.txt
RUN echo ran-two && cat /b.txt /one > /two
CMD ["cat", "/two"]
"""

MULTI = """\
FROM {base} AS builder
RUN echo ran-builder && echo made > /made
FROM {base}
COPY --from=builder /made /made
RUN echo ran-final && cat /made > /final
"""


def ran(built: subprocess.CompletedProcess[str]) -> list[str]:
    """The markers of the RUN steps that ran, in order (a step's output line is `[N] text`)."""
    return re.findall(r"^\[\d+\] (ran-\w+)$", built.stdout, re.MULTILINE)


def reused(built: subprocess.CompletedProcess[str]) -> tuple[int, int]:
    found = re.search(r"^Cache: (\d+) of (\d+) layer steps reused$", built.stdout, re.MULTILINE)
    assert found, built.stdout
    return int(found.group(1)), int(found.group(2))


@pytest.fixture
def base(tool: Tool, registry: Registry) -> str:
    ref = f"{registry.address}/base/busybox:1"
    tool.run("push", "busybox", ref, "--insecure")
    return ref


def test_a_fresh_store_reuses_every_step_from_the_registry_and_makes_the_same_image(
    registry: Registry, base: str, ctx: Path, tmp_path: Path
) -> None:
    dockerfile(ctx, SINGLE.format(base=base))
    (ctx / "a.txt").write_text("alpha\n")
    (ctx / "b.txt").write_text("beta\n")
    cache = f"{registry.address}/cache/app:buildcache"
    first = Tool(tmp_path / "machine-1")
    written = first.build(ctx, "--insecure", "--cache-to", f"type=registry,ref={cache},mode=max")
    assert ran(written) == ["ran-one", "ran-two"]
    assert f"Cache: 4 step(s), 4 layer(s) written to {cache} (mode=max" in written.stdout

    second = Tool(tmp_path / "machine-2")
    served = second.build(ctx, "--insecure", "--cache-from", f"type=registry,ref={cache}")
    assert ran(served) == [] and reused(served) == (4, 4), served.stdout
    assert second.image_id(served) == first.image_id(written)
    assert second.run("run", "--rm", second.image_id(served)).stdout == "beta\nalpha\n"
    assert second.run("check").stdout.strip() == "store consistent"  # fetched layers: blob, tar and directory agree

    (ctx / "b.txt").write_text("beta, changed\n")
    third = Tool(tmp_path / "machine-3")
    partly = third.build(ctx, "--insecure", "--cache-from", cache, "--explain-cache")
    assert ran(partly) == ["ran-two"] and reused(partly) == (2, 4), partly.stdout
    assert third.run("run", "--rm", third.image_id(partly)).stdout == "beta, changed\nalpha\n"


def test_mode_min_writes_the_final_stage_and_mode_max_every_stage(
    registry: Registry, base: str, ctx: Path, tmp_path: Path
) -> None:
    dockerfile(ctx, MULTI.format(base=base))
    writer = Tool(tmp_path / "writer")
    built = writer.build(
        ctx,
        "--insecure",
        "--cache-to",
        f"type=registry,ref={registry.address}/cache/multi:min",
        "--cache-to",
        f"type=registry,ref={registry.address}/cache/multi:max,mode=max",
    )
    assert sorted(ran(built)) == ["ran-builder", "ran-final"]
    minimal = Tool(tmp_path / "min").build(ctx, "--insecure", "--cache-from", f"{registry.address}/cache/multi:min")
    assert ran(minimal) == ["ran-builder"] and reused(minimal) == (2, 3), minimal.stdout
    maximal = Tool(tmp_path / "max").build(
        ctx, "--insecure", "--cache-from", f"type=registry,ref={registry.address}/cache/multi:max"
    )
    assert ran(maximal) == [] and reused(maximal) == (3, 3), maximal.stdout
    assert Tool(tmp_path / "max").image_id(maximal) == writer.image_id(built)


def test_skopeo_reads_the_cache_manifest(registry: Registry, base: str, tool: Tool, ctx: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is needed")
    dockerfile(ctx, f"FROM {base}\nRUN echo ran-once > /once\n")
    cache = f"{registry.address}/cache/seen:latest"
    tool.build(ctx, "--insecure", "--cache-to", f"type=registry,ref={cache}")

    def skopeo(*args: str) -> dict[str, object]:
        done = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--raw", *args], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        doc: dict[str, object] = json.loads(done.stdout)
        return doc

    index = skopeo(f"docker://{cache}")
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert index["artifactType"] == "application/vnd.imagebuild.buildcache.v1"
    entry = index["manifests"][0]  # type: ignore[index]
    manifest = skopeo(f"docker://{registry.address}/cache/seen@{entry['digest']}")
    assert manifest["config"]["mediaType"] == "application/vnd.imagebuild.buildcache.config.v1+json"  # type: ignore[index]
    layers = manifest["layers"]
    assert len(layers) == 1 and layers[0]["annotations"]["containerd.io/uncompressed"].startswith("sha256:")  # type: ignore[index]


def test_cache_flags_errors_are_one_line(tool: Tool, registry: Registry, ctx: Path) -> None:
    dockerfile(ctx, "FROM busybox\nRUN true\n")
    for flag, value, says in (
        ("--cache-to", "type=local,dest=/tmp/x", "type=local is not supported"),
        ("--cache-to", f"type=registry,ref={registry.address}/c/x:1,mode=all", "mode=all"),
        ("--cache-from", "type=registry", "names no ref"),
        ("--cache-from", "type=registry,ref=nohost", "names no registry"),
    ):
        done = tool.build(ctx, "--insecure", flag, value, check=False)
        assert done.returncode == 1 and says in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    unreachable = "type=registry,ref=127.0.0.1:1/c/x:1"
    failed = tool.build(ctx, "--insecure", "--cache-to", unreachable, check=False)
    assert failed.returncode == 1 and failed.stderr.startswith("imagebuild: error: --cache-to 127.0.0.1:1/c/x:1: ")
    ignored = tool.build(ctx, "--insecure", "--cache-to", unreachable + ",ignore-error=true")
    assert ignored.stderr.startswith("imagebuild: warning: --cache-to ") and "(ignore-error=true)" in ignored.stderr
    first = tool.build(ctx, "--insecure", "--cache-from", f"{registry.address}/c/none:1")
    assert "Cache: 0 step(s) known" in first.stdout  # nothing there yet: a first build, not an error
    image = f"{registry.address}/c/image:1"
    tool.run("push", "busybox", image, "--insecure")
    wrong = tool.build(ctx, "--insecure", "--cache-from", image)  # as BuildKit: a cache never fails a build
    assert wrong.stderr.startswith("imagebuild: warning: --cache-from ") and "not a build cache" in wrong.stderr
    assert wrong.stderr.strip().endswith("building without it") and len(wrong.stderr.strip().splitlines()) == 1


def test_a_layer_missing_from_the_registry_is_a_miss_not_a_failure(
    registry: Registry, base: str, ctx: Path, tmp_path: Path
) -> None:
    dockerfile(ctx, SINGLE.format(base=base))
    (ctx / "a.txt").write_text("alpha\n")
    (ctx / "b.txt").write_text("beta\n")
    cache = f"{registry.address}/cache/lossy:1"
    writer = Tool(tmp_path / "writer")
    writer.build(ctx, "-t", "lossy", "--insecure", "--cache-to", f"type=registry,ref={cache}")
    last = writer.inspect("lossy")["Manifest"]["Layers"][-1]["digest"]  # type: ignore[index]
    hexdigest = last.removeprefix("sha256:")
    blob = registry.log.parent / "data/docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    blob.unlink()  # lost on the registry's disk (a garbage collection, a bad restore)
    reader = Tool(tmp_path / "reader")
    built = reader.build(ctx, "--insecure", "--cache-from", cache)
    assert ran(built) == ["ran-two"] and reused(built) == (3, 4), built.stdout
    warning = built.stderr.strip()
    assert len(warning.splitlines()) == 1 and warning.startswith("imagebuild: warning: ") and hexdigest in warning
    assert reader.run("run", "--rm", reader.image_id(built)).stdout == "beta\nalpha\n"


PARALLEL = """\
FROM {base} AS slow
RUN sleep 2 && echo ran-slow && echo slow > /slow
FROM {base} AS quick
RUN echo ran-quick && echo quick > /quick
FROM {base}
COPY --from=slow /slow /slow
COPY --from=quick /quick /quick
RUN echo ran-final && cat /slow /quick > /both
"""


def written_digest(built: subprocess.CompletedProcess[str]) -> str:
    found = re.search(r"^Cache: .* written to .* \(mode=max, (sha256:[0-9a-f]{64})\)", built.stdout, re.MULTILINE)
    assert found, built.stdout
    return found.group(1)


def test_stages_built_at_once_write_every_stage_and_read_it_back_at_once(
    registry: Registry, base: str, ctx: Path, tmp_path: Path
) -> None:
    """Two stages at once (the quick one ends first): mode=max holds both and the final stage's steps (a COPY
    --from of a whole file makes the layer its RUN made: 3 layers), in Dockerfile order (the cache a serial build
    writes is the same bytes), and a fresh store building the stages at once is served every step."""
    dockerfile(ctx, PARALLEL.format(base=base))
    writer = Tool(tmp_path / "writer")
    cache = f"{registry.address}/cache/parallel"
    built = writer.build(ctx, "--insecure", "--jobs", "4", "--cache-to", f"type=registry,ref={cache}:jobs4,mode=max")
    assert sorted(ran(built)) == ["ran-final", "ran-quick", "ran-slow"]
    assert f"Cache: 5 step(s), 3 layer(s) written to {cache}:jobs4 (mode=max" in built.stdout, built.stdout
    again = writer.build(ctx, "--insecure", "--jobs", "1", "--cache-to", f"type=registry,ref={cache}:jobs1,mode=max")
    assert ran(again) == [] and written_digest(again) == written_digest(built)
    reader = Tool(tmp_path / "reader")
    served = reader.build(ctx, "--insecure", "--jobs", "4", "--cache-from", f"{cache}:jobs4")
    assert ran(served) == [] and reused(served) == (5, 5), served.stdout
    assert reader.image_id(served) == writer.image_id(built)
    assert reader.run("run", "--rm", reader.image_id(served), "cat", "/both").stdout == "slow\nquick\n"
