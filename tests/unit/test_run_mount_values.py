"""RUN --mount values and build --secret values as docker buildx writes them, and the cache directories' sharing."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from imagebuild.builder.secrets import parse as parse_secrets
from imagebuild.dockerfile.mounts import MountError, parse_mount
from imagebuild.errors import BuildError
from imagebuild.store import caches


def test_buildkit_defaults() -> None:
    cache = parse_mount("type=cache,target=/root/.cache/pip")
    assert (cache.id, cache.sharing, cache.mode, cache.readonly) == ("/root/.cache/pip", "shared", 0o755, False)
    secret = parse_mount("type=secret,id=aws")
    assert (secret.target, secret.mode, secret.required, secret.env) == ("/run/secrets/aws", 0o400, False, None)
    assert parse_mount("type=secret,id=t,env=TOKEN").target is None  # a variable only
    assert parse_mount("type=secret,target=/etc/key").id == "key"  # the id defaults to the target's name
    bind = parse_mount("target=/src")  # type defaults to bind, read-only, from the context
    assert (bind.type, bind.readonly, bind.from_, bind.source) == ("bind", True, None, "")
    rw = parse_mount("type=bind,from=build,src=/out/,dst=mnt,rw")
    assert (rw.readonly, rw.from_, rw.source, rw.target) == (False, "build", "out", "/mnt")
    assert parse_mount("type=tmpfs,target=/t,size=64m").size == 64 << 20
    assert parse_mount('type=bind,"target=/a,b"').target == "/a,b"  # CSV quoting, as BuildKit reads it


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("type=nfs,target=/x", "unknown --mount type 'nfs'"),
        ("type=cache", "needs a target"),
        ("type=cache,target=/x,sharing=sometimes", "unknown --mount sharing 'sometimes'"),
        ("type=cache,target=/x,mode=rwx", "octal mode"),
        ("type=cache,target=/x,uid=me", "must be a number"),
        ("type=tmpfs,target=/x,size=lots", "not a size"),
        ("type=tmpfs,target=/x,from=a", "takes no 'from'"),
        ("type=secret", "needs an id"),
        ("type=secret,id=a,env=1X", "not a variable name"),
        ("type=bind,target=/", "hide the whole image"),
        ("type=bind,target=/x,ro=maybe", "true or false"),
        ("type=ssh", "not supported"),
        ("colour=red,target=/x", "unknown --mount field 'colour'"),
    ],
)
def test_bad_values_say_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(MountError, match=message):
        parse_mount(value)


def test_the_key_holds_the_form_only() -> None:
    assert parse_mount("type=secret,id=a").key() == parse_mount("type=secret,id=a").key()
    assert parse_mount("type=cache,target=/a").key() != parse_mount("type=cache,target=/a,sharing=locked").key()


def test_secret_values(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"file bytes")
    env = {"TOKEN": "from env", "plain": "by id"}
    found = parse_secrets(
        [f"id=a,src={tmp_path / 'f'}", f"id=b,source={tmp_path / 'f'},type=file", "id=c,env=TOKEN", "id=plain"],
        env,
    )
    assert found == {"a": b"file bytes", "b": b"file bytes", "c": b"from env", "plain": b"by id"}
    assert parse_secrets(["type=env,id=d,src=TOKEN"], env) == {"d": b"from env"}
    for bad, message in [
        ("src=/x", "no id"),
        ("id=a,colour=red", "unknown field"),
        ("id=a,env=MISSING", "MISSING is not set"),
        (f"id=a,src={tmp_path / 'none'}", "cannot read"),
        ("id=a,type=ssh", "type is file or env"),
    ]:
        with pytest.raises(BuildError, match=message):
            parse_secrets([bad], env)


def _hold(root: str, sharing: str, seconds: float, queue: multiprocessing.Queue[tuple[str, float, float]]) -> None:
    with caches.use(root, "shared-id", sharing) as cache:
        start = time.monotonic()
        time.sleep(seconds)
        queue.put((cache.path, start, time.monotonic()))


def _in_two_processes(root: str, sharing: str) -> list[tuple[str, float, float]]:
    spawn = multiprocessing.get_context("spawn")  # not fork: a forked child can inherit a lock another thread held
    queue: multiprocessing.Queue[tuple[str, float, float]] = spawn.Queue()
    procs = [spawn.Process(target=_hold, args=(root, sharing, 3.0, queue)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    return sorted(queue.get(timeout=10) for _ in procs)


def test_cache_sharing(tmp_path: Path) -> None:
    root = str(tmp_path)
    shared = _in_two_processes(root, "shared")
    assert shared[0][0] == shared[1][0]  # one directory, used at once
    assert max(s for _, s, _ in shared) < min(e for _, _, e in shared)
    locked = sorted(_in_two_processes(root, "locked"), key=lambda r: r[1])
    assert locked[0][0] == locked[1][0] and locked[1][1] >= locked[0][2] - 0.01  # one after the other
    private = _in_two_processes(root, "private")
    assert private[0][0] != private[1][0]  # the second gets a directory of its own while the first is in use
    removed, _, busy = caches.prune(root)
    assert (removed, busy) == (2, 0)
    assert caches.prune(root) == (0, 0, 0)
