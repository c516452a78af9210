"""OCI models: JSON round trips, canonical output, and validation errors that name the bad field."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from imagebuild.oci import (
    ContainerConfig,
    Descriptor,
    Healthcheck,
    History,
    ImageConfig,
    Index,
    Manifest,
    OCIError,
    Platform,
    RootFS,
    canonical_json,
    descriptor_for,
    mediatypes,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def manifest_dict() -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": D1, "size": 1234},
        "layers": [
            {"mediaType": mediatypes.OCI_LAYER_GZIP, "digest": D2, "size": 5678},
            {
                "mediaType": mediatypes.OCI_LAYER_ZSTD,
                "digest": D3,
                "size": 0,
                "annotations": {"org.example.note": "caf\u00e9"},
                "urls": ["https://example.com/layer"],
            },
        ],
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }


def config_dict() -> dict[str, Any]:
    return {
        "created": "2024-01-01T00:00:00.123456789Z",
        "author": "someone",
        "architecture": "arm64",
        "variant": "v8",
        "os": "linux",
        "config": {
            "User": "1000:1000",
            "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
            "Env": ["PATH=/usr/bin:/bin", "A=b=c"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": [],
            "Volumes": {"/data": {}},
            "WorkingDir": "/srv",
            "Labels": {"org.example": "yes"},
            "StopSignal": "SIGTERM",
            "Shell": ["/bin/bash", "-c"],
            "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30_000_000_000, "Retries": 3},
            "OnBuild": ["RUN true"],
            "ArgsEscaped": True,
        },
        "rootfs": {"type": "layers", "diff_ids": [D2, D3]},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": "ADD rootfs.tar /", "comment": "base"},
            {"created_by": "ENV A=b", "empty_layer": True},
        ],
        "container_config": {"Hostname": "legacy"},
    }


def test_manifest_roundtrip() -> None:
    raw = json.dumps(manifest_dict(), indent=2).encode()
    manifest = Manifest.from_json(raw)
    assert manifest.config.digest == D1 and manifest.config.size == 1234
    assert [layer.media_type for layer in manifest.layers] == [
        mediatypes.OCI_LAYER_GZIP,
        mediatypes.OCI_LAYER_ZSTD,
    ]
    assert manifest.layers[1].annotations == {"org.example.note": "caf\u00e9"}
    assert json.loads(manifest.to_json()) == manifest_dict()
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_canonical_json_is_sorted_compact_utf8() -> None:
    manifest = Manifest.from_dict(manifest_dict())
    text = manifest.to_json()
    assert text == canonical_json(manifest_dict())
    assert b" " not in text.replace(b"image.manifest", b"")  # no insignificant whitespace
    assert "caf\u00e9".encode() in text  # UTF-8, not \u escapes
    assert text.index(b'"annotations"') < text.index(b'"config"') < text.index(b'"layers"')
    assert manifest.json_digest() == "sha256:" + hashlib.sha256(text).hexdigest()
    shuffled = dict(reversed(list(manifest_dict().items())))
    assert Manifest.from_dict(shuffled).to_json() == text


def test_docker_manifest_and_list_are_accepted() -> None:
    raw = manifest_dict()
    raw["mediaType"] = mediatypes.DOCKER_MANIFEST
    raw["config"]["mediaType"] = mediatypes.DOCKER_CONFIG
    assert Manifest.from_dict(raw).media_type == mediatypes.DOCKER_MANIFEST
    index = Index.from_dict(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.DOCKER_MANIFEST_LIST,
            "manifests": [{"mediaType": mediatypes.DOCKER_MANIFEST, "digest": D1, "size": 1}],
        }
    )
    assert index.media_type == mediatypes.DOCKER_MANIFEST_LIST


def test_index_roundtrip_with_platforms() -> None:
    index = Index(
        manifests=[
            Descriptor(mediatypes.OCI_MANIFEST, D1, 10, platform=Platform("amd64", "linux")),
            Descriptor(
                mediatypes.OCI_MANIFEST,
                D2,
                20,
                platform=Platform("arm", "linux", variant="v7", os_features=["x"]),
                annotations={"org.opencontainers.image.ref.name": "latest"},
            ),
        ]
    )
    data = json.loads(index.to_json())
    assert data["schemaVersion"] == 2 and data["mediaType"] == mediatypes.OCI_INDEX
    assert data["manifests"][1]["platform"] == {
        "architecture": "arm",
        "os": "linux",
        "variant": "v7",
        "os.features": ["x"],
    }
    assert "annotations" not in data  # empty maps are omitted
    assert Index.from_json(index.to_json()) == index


def test_image_config_roundtrip_keeps_unknown_fields() -> None:
    config = ImageConfig.from_dict(config_dict())
    assert config.config.exposed_ports == ["443/tcp", "80/tcp"]
    assert config.config.cmd == [] and config.config.entrypoint == ["/bin/sh", "-c"]
    assert config.config.healthcheck == Healthcheck(test=["CMD", "true"], interval=30_000_000_000, retries=3)
    assert config.history[1].empty_layer and not config.history[0].empty_layer
    assert config.rootfs.diff_ids == [D2, D3]
    assert config.extra == {"container_config": {"Hostname": "legacy"}}
    assert config.config.extra == {"ArgsEscaped": True}
    assert json.loads(config.to_json()) == config_dict()
    assert ImageConfig.from_json(config.to_json()) == config


def test_minimal_config_and_omitempty() -> None:
    config = ImageConfig(architecture="amd64", os="linux", rootfs=RootFS([D1]), history=[History(created_by="x")])
    data = json.loads(config.to_json())
    assert data == {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [D1]},
        "history": [{"created_by": "x"}],
    }
    # absent Cmd and empty Cmd are different things
    assert "Cmd" not in json.loads(ContainerConfig().to_json())
    assert json.loads(ContainerConfig(cmd=[]).to_json()) == {"Cmd": []}


def test_descriptor_for_bytes() -> None:
    blob = b'{"a":1}'
    desc = descriptor_for(mediatypes.OCI_CONFIG, blob)
    assert desc.digest == "sha256:" + hashlib.sha256(blob).hexdigest() and desc.size == len(blob)


def test_layer_media_type_helpers() -> None:
    assert mediatypes.layer_compression(mediatypes.DOCKER_LAYER_GZIP) == "gzip"
    assert mediatypes.layer_compression(mediatypes.OCI_LAYER) is None
    assert mediatypes.layer_media_type("zstd") == mediatypes.OCI_LAYER_ZSTD
    assert mediatypes.layer_media_type(None, docker=True) == mediatypes.DOCKER_LAYER
    with pytest.raises(ValueError):
        mediatypes.layer_compression(mediatypes.OCI_CONFIG)


def _bad_manifest(change: str) -> dict[str, Any]:
    raw = manifest_dict()
    if change == "version":
        raw["schemaVersion"] = 1
    elif change == "size-string":
        raw["layers"][1]["size"] = "12"
    elif change == "size-bool":
        raw["layers"][0]["size"] = True
    elif change == "size-negative":
        raw["config"]["size"] = -1
    elif change == "digest":
        raw["layers"][0]["digest"] = "sha256:XYZ"
    elif change == "no-config":
        del raw["config"]
    elif change == "media-type":
        raw["mediaType"] = mediatypes.OCI_INDEX
    elif change == "layer-not-object":
        raw["layers"][1] = "sha256:abc"
    elif change == "annotation-value":
        raw["annotations"] = {"a": 1}
    elif change == "malformed-media-type":
        raw["layers"][0]["mediaType"] = "not a media type"
    return raw


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("version", r"manifest\.schemaVersion: expected 2"),
        ("size-string", r"manifest\.layers\[1\]\.size: expected integer, got string"),
        ("size-bool", r"manifest\.layers\[0\]\.size: expected integer, got boolean"),
        ("size-negative", r"manifest\.config\.size: must be >= 0"),
        ("digest", r"manifest\.layers\[0\]\.digest: digest .sha256:XYZ.: sha256 needs 64 lowercase hex"),
        ("no-config", r"manifest\.config: required field is missing"),
        ("media-type", r"manifest\.mediaType: expected one of"),
        ("layer-not-object", r"manifest\.layers\[1\]: expected object, got string"),
        ("annotation-value", r"manifest\.annotations\.a: expected string, got number"),
        ("malformed-media-type", r"manifest\.layers\[0\]\.mediaType: malformed media type"),
    ],
)
def test_manifest_validation_names_the_field(change: str, message: str) -> None:
    with pytest.raises(OCIError, match=message):
        Manifest.from_dict(_bad_manifest(change))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("config", "Env"), ["A=1", 2], r"config\.config\.Env\[1\]: expected string, got number"),
        (("config", "Cmd"), "echo hi", r"config\.config\.Cmd: expected array, got string"),
        (
            ("config", "ExposedPorts"),
            {"80/tcp": []},
            r"config\.config\.ExposedPorts\.80/tcp: expected object",
        ),
        (
            ("config", "Healthcheck"),
            {"Retries": "3"},
            r"config\.config\.Healthcheck\.Retries: expected integer",
        ),
        (("rootfs", "type"), "tarballs", r"config\.rootfs\.type: expected 'layers'"),
        (("rootfs", "diff_ids"), ["sha256:short"], r"config\.rootfs\.diff_ids\[0\]:"),
        (("history",), [{"empty_layer": "yes"}], r"config\.history\[0\]\.empty_layer: expected boolean"),
        (("architecture",), None, r"config\.architecture: required field is missing"),
    ],
)
def test_config_validation_names_the_field(path: tuple[str, ...], value: object, message: str) -> None:
    raw = config_dict()
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(OCIError, match=message):
        ImageConfig.from_dict(raw)


def test_not_json_or_not_an_object() -> None:
    with pytest.raises(OCIError, match="manifest: invalid JSON"):
        Manifest.from_json(b"{not json")
    with pytest.raises(OCIError, match="index: expected object, got array"):
        Index.from_json(b"[]")
    with pytest.raises(OCIError, match="invalid JSON"):
        ImageConfig.from_json(b"\xff\xfe")
    with pytest.raises(OCIError, match=r"index\.manifests: required"):
        Index.from_json(b'{"schemaVersion": 2}')


def test_descriptor_constructor_validates() -> None:
    with pytest.raises(OCIError, match="digest"):
        Descriptor(mediatypes.OCI_LAYER, "sha256:nothex", 1)
    with pytest.raises(OCIError, match="size"):
        Descriptor(mediatypes.OCI_LAYER, D1, -5)
    sha512 = "sha512:" + "a" * 128
    assert Descriptor.from_dict({"mediaType": mediatypes.OCI_LAYER, "digest": sha512, "size": 1}).digest == sha512
