"""`run --lazy` as an ordinary user: the daemon, started in the user's namespace as any rootless run's, fetches
files into the user's store, and the skeleton carries the image's owners as records."""

from __future__ import annotations

from pathlib import Path

from tests.registry.conftest import Registry, registry  # noqa: F401  (the registry fixture)
from tests.rootless.conftest import User, own_tree
from tests.rootless.test_rootless_run_flags import Store, make_store


def test_run_lazy_as_an_ordinary_user(user: User, workspace: Path, registry: Registry) -> None:  # noqa: F811
    store = make_store(user, workspace)
    ctx = workspace / "lazyctx"
    ctx.mkdir()
    (ctx / "note").write_text("fetched lazily\n")
    (ctx / "Dockerfile").write_text("FROM busybox:1.35\nCOPY note /srv/note\nRUN chown 1:1 /srv/note\n")
    own_tree(ctx, user)
    store.run("build", "-t", "lazy-user", str(ctx))
    ref = f"{registry.address}/rootless/lazy:1"
    store.run("push", "--insecure", "--estargz", "lazy-user", ref)
    fresh = Store(user, workspace / "fresh")
    done = fresh.run("run", "--rm", "--lazy", "--insecure", ref, "sh", "-c", "cat /srv/note; stat -c %u:%g /srv/note")
    assert done.stdout == "fetched lazily\n1:1\n"
    files = list((workspace / "fresh" / "lazy" / "files").iterdir())
    assert files and all(f.stat().st_uid == user.uid for f in files)
