"""One cache REF shared by machines of several architectures: each writes its own platform's entry of the index
and keeps the others'; each reads only its own (a real registry on 127.0.0.1, the format's code in-process)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from imagebuild.oci import Platform
from imagebuild.store.images import Store
from imagebuild.transport import buildcache
from imagebuild.transport.registry import Client, Reference
from tests.image.conftest import Tool
from tests.registry.conftest import Registry


def test_each_platform_keeps_its_own_entry(tool: Tool, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(str(tool.root))
    layers = store.resolve("busybox").layers
    ref = Reference.parse(f"{registry.address}/cache/fleet:1")
    client = Client(ref.registry, insecure=True, progress=None)
    written = {}
    for arch, layer in (("arm64", layers[0]), ("amd64", layers[-1]), ("arm64", layers[-1])):
        monkeypatch.setattr(buildcache, "this_platform", lambda arch=arch: Platform(architecture=arch, os="linux"))
        key = f"{arch}{len(written)}".ljust(64, "0")
        buildcache.push(store, [buildcache.Record(key, layer, "2026-01-01T00:00:00Z")], ref, client)
        written[arch] = key
    request = urllib.request.Request(
        f"http://{ref.registry}/v2/{ref.repository}/manifests/1",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
    )
    with urllib.request.urlopen(request) as answer:
        index = json.loads(answer.read())
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
    for arch, key in written.items():
        monkeypatch.setattr(buildcache, "this_platform", lambda arch=arch: Platform(architecture=arch, os="linux"))
        assert list(buildcache.RemoteCache.open(ref, client).records) == [key]  # the later arm64 write replaced its own
    monkeypatch.setattr(buildcache, "this_platform", lambda: Platform(architecture="riscv64", os="linux"))
    assert buildcache.RemoteCache.open(ref, client).records == {}  # no entry for this platform: nothing cached
