"""OCI image models (descriptor, manifest, index, image config) with validated JSON in and canonical JSON out.

Parsing checks every field's type and names the bad one (`manifest.layers[1].size: expected integer, got
string`). Unknown keys are kept in `extra` and written back, so a base image's config survives a round trip.
Serialisation is canonical (`canonical_json`: sorted keys, no spaces, UTF-8), so the same model always has the
same digest. Empty optional lists and maps are omitted; `Cmd`, `Entrypoint` and `Shell` keep the difference
between absent (None) and empty ([]).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Self

from imagebuild.oci import mediatypes
from imagebuild.oci.digest import sha256_digest
from imagebuild.oci.fields import Fields, OCIError, canonical_json, check_digest, load_json, put

_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")


def _opt_media_type(fields: Fields, key: str) -> str | None:
    value = fields.opt_str(key)
    if value is not None and not _MEDIA_TYPE.match(value):
        raise OCIError(f"{fields.path(key)}: malformed media type {value!r}")
    return value


def _req_media_type(fields: Fields, key: str) -> str:
    value = _opt_media_type(fields, key)
    if value is None:
        raise OCIError(f"{fields.path(key)}: required field is missing")
    return value


def _objects(fields: Fields, key: str) -> list[tuple[object, str]]:
    """The items of an array of objects at `key`, each with its path for error messages."""
    items = fields.opt_list(key) or []
    return [(item, f"{fields.path(key)}[{i}]") for i, item in enumerate(items)]


class _Model:
    """JSON entry points shared by every model: from_json / to_json / digest."""

    @classmethod
    def parse(cls, obj: object, where: str) -> Self:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        where = cls._where()
        return cls.parse(load_json(data, where), where)

    @classmethod
    def from_dict(cls, obj: object) -> Self:
        return cls.parse(obj, cls._where())

    @classmethod
    def _where(cls) -> str:
        return cls.__name__[0].lower() + cls.__name__[1:]

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    def json_digest(self) -> str:
        """sha256 of the canonical JSON (the digest this document gets when written by us)."""
        return sha256_digest(self.to_json())


@dataclass
class Platform(_Model):
    architecture: str
    os: str
    os_version: str | None = None
    os_features: list[str] = field(default_factory=list)
    variant: str | None = None
    features: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: object, where: str) -> Self:
        f = Fields(obj, where)
        return cls(
            architecture=f.req_str("architecture"),
            os=f.req_str("os"),
            os_version=f.opt_str("os.version"),
            os_features=f.opt_str_list("os.features") or [],
            variant=f.opt_str("variant"),
            features=f.opt_str_list("features") or [],
            extra=f.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["architecture"] = self.architecture
        out["os"] = self.os
        put(out, "os.version", self.os_version)
        put(out, "os.features", self.os_features)
        put(out, "variant", self.variant)
        put(out, "features", self.features)
        return out


@dataclass
class Descriptor(_Model):
    media_type: str
    digest: str
    size: int
    urls: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str | None = None
    data: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_digest(self.digest, "descriptor.digest")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise OCIError(f"descriptor.size: expected a non-negative integer, got {self.size!r}")

    @classmethod
    def parse(cls, obj: object, where: str) -> Self:
        f = Fields(obj, where)
        platform = f.raw("platform")
        return cls(
            media_type=_req_media_type(f, "mediaType"),
            digest=f.req_digest("digest"),
            size=f.req_int("size", minimum=0),
            urls=f.opt_str_list("urls") or [],
            annotations=f.opt_str_map("annotations") or {},
            platform=None if platform is None else Platform.parse(platform, f.path("platform")),
            artifact_type=_opt_media_type(f, "artifactType"),
            data=f.opt_str("data"),
            extra=f.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["mediaType"] = self.media_type
        out["digest"] = self.digest
        out["size"] = self.size
        put(out, "urls", self.urls)
        put(out, "annotations", self.annotations)
        put(out, "platform", None if self.platform is None else self.platform.to_dict())
        put(out, "artifactType", self.artifact_type)
        put(out, "data", self.data)
        return out


def descriptor_for(media_type: str, data: bytes, **kwargs: Any) -> Descriptor:
    """A descriptor (sha256 digest and size) for the bytes `data`."""
    return Descriptor(media_type=media_type, digest=sha256_digest(data), size=len(data), **kwargs)


def _schema_version(f: Fields) -> int:
    version = f.req_int("schemaVersion")
    if version != 2:
        raise OCIError(f"{f.path('schemaVersion')}: expected 2, got {version}")
    return version


def _check_type(f: Fields, key: str, value: str | None, allowed: frozenset[str]) -> None:
    if value is not None and value not in allowed:
        raise OCIError(f"{f.path(key)}: expected one of {sorted(allowed)}, got {value!r}")


@dataclass
class Manifest(_Model):
    """An image manifest: OCI (`OCI_MANIFEST`) or Docker v2 schema 2 (`DOCKER_MANIFEST`), same shape."""

    config: Descriptor
    layers: list[Descriptor] = field(default_factory=list)
    media_type: str | None = mediatypes.OCI_MANIFEST
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None
    subject: Descriptor | None = None
    schema_version: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: object, where: str) -> Self:
        f = Fields(obj, where)
        version = _schema_version(f)
        media_type = _opt_media_type(f, "mediaType")
        _check_type(f, "mediaType", media_type, mediatypes.MANIFEST_TYPES)
        config = f.raw("config")
        if config is None:
            raise OCIError(f"{f.path('config')}: required field is missing")
        subject = f.raw("subject")
        return cls(
            config=Descriptor.parse(config, f.path("config")),
            layers=[Descriptor.parse(item, path) for item, path in _objects(f, "layers")],
            media_type=media_type,
            annotations=f.opt_str_map("annotations") or {},
            artifact_type=_opt_media_type(f, "artifactType"),
            subject=None if subject is None else Descriptor.parse(subject, f.path("subject")),
            schema_version=version,
            extra=f.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["schemaVersion"] = self.schema_version
        put(out, "mediaType", self.media_type)
        out["config"] = self.config.to_dict()
        out["layers"] = [layer.to_dict() for layer in self.layers]
        put(out, "annotations", self.annotations)
        put(out, "artifactType", self.artifact_type)
        put(out, "subject", None if self.subject is None else self.subject.to_dict())
        return out


@dataclass
class Index(_Model):
    """An image index: OCI (`OCI_INDEX`) or a Docker manifest list (`DOCKER_MANIFEST_LIST`)."""

    manifests: list[Descriptor] = field(default_factory=list)
    media_type: str | None = mediatypes.OCI_INDEX
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None
    subject: Descriptor | None = None
    schema_version: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: object, where: str) -> Self:
        f = Fields(obj, where)
        version = _schema_version(f)
        media_type = _opt_media_type(f, "mediaType")
        _check_type(f, "mediaType", media_type, mediatypes.INDEX_TYPES)
        if f.raw("manifests") is None:
            raise OCIError(f"{f.path('manifests')}: required field is missing")
        subject = f.raw("subject")
        return cls(
            manifests=[Descriptor.parse(item, path) for item, path in _objects(f, "manifests")],
            media_type=media_type,
            annotations=f.opt_str_map("annotations") or {},
            artifact_type=_opt_media_type(f, "artifactType"),
            subject=None if subject is None else Descriptor.parse(subject, f.path("subject")),
            schema_version=version,
            extra=f.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["schemaVersion"] = self.schema_version
        put(out, "mediaType", self.media_type)
        out["manifests"] = [m.to_dict() for m in self.manifests]
        put(out, "annotations", self.annotations)
        put(out, "artifactType", self.artifact_type)
        put(out, "subject", None if self.subject is None else self.subject.to_dict())
        return out


@dataclass
class Healthcheck(_Model):
    """Docker's HEALTHCHECK (durations in nanoseconds, as Docker stores them)."""

    test: list[str] = field(default_factory=list)
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: object, where: str) -> Self:
        f = Fields(obj, where)
        return cls(
            test=f.opt_str_list("Test") or [],
            interval=f.opt_int("Interval", minimum=0),
            timeout=f.opt_int("Timeout", minimum=0),
            start_period=f.opt_int("StartPeriod", minimum=0),
            start_interval=f.opt_int("StartInterval", minimum=0),
            retries=f.opt_int("Retries", minimum=0),
            extra=f.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        put(out, "Test", self.test)
        put(out, "Interval", self.interval)
        put(out, "Timeout", self.timeout)
        put(out, "StartPeriod", self.start_period)
        put(out, "StartInterval", self.start_interval)
        put(out, "Retries", self.retries)
        return out


@dataclass
class ContainerConfig(_Model):
    """The `config` member of an image config: what a container of the image runs with."""

    user: str | None = None
    exposed_ports: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    volumes: list[str] = field(default_factory=list)
    working_dir: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str | None = None
    shell: list[str] | None = None
    healthcheck: Healthcheck | None = None
    on_build: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: object, where: str) -> Self:
        f = Fields(obj, where)
        health = f.raw("Healthcheck")
        return cls(
            user=f.opt_str("User"),
            exposed_ports=f.opt_key_set("ExposedPorts") or [],
            env=f.opt_str_list("Env") or [],
            entrypoint=f.opt_str_list("Entrypoint"),
            cmd=f.opt_str_list("Cmd"),
            volumes=f.opt_key_set("Volumes") or [],
            working_dir=f.opt_str("WorkingDir"),
            labels=f.opt_str_map("Labels") or {},
            stop_signal=f.opt_str("StopSignal"),
            shell=f.opt_str_list("Shell"),
            healthcheck=None if health is None else Healthcheck.parse(health, f.path("Healthcheck")),
            on_build=f.opt_str_list("OnBuild") or [],
            extra=f.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        put(out, "User", self.user or None)
        put(out, "ExposedPorts", {port: {} for port in self.exposed_ports})
        put(out, "Env", self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        put(out, "Volumes", {volume: {} for volume in self.volumes})
        put(out, "WorkingDir", self.working_dir or None)
        put(out, "Labels", self.labels)
        put(out, "StopSignal", self.stop_signal or None)
        if self.shell is not None:
            out["Shell"] = list(self.shell)
        put(out, "Healthcheck", None if self.healthcheck is None else self.healthcheck.to_dict())
        put(out, "OnBuild", self.on_build)
        return out


@dataclass
class RootFS(_Model):
    diff_ids: list[str] = field(default_factory=list)
    type: str = "layers"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: object, where: str) -> Self:
        f = Fields(obj, where)
        kind_ = f.req_str("type")
        if kind_ != "layers":
            raise OCIError(f"{f.path('type')}: expected 'layers', got {kind_!r}")
        ids = f.opt_str_list("diff_ids")
        if ids is None:
            raise OCIError(f"{f.path('diff_ids')}: required field is missing")
        for i, diff_id in enumerate(ids):
            check_digest(diff_id, f"{f.path('diff_ids')}[{i}]")
        return cls(diff_ids=ids, type=kind_, extra=f.extra())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["type"] = self.type
        out["diff_ids"] = list(self.diff_ids)
        return out


@dataclass
class History(_Model):
    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: object, where: str) -> Self:
        f = Fields(obj, where)
        return cls(
            created=f.opt_str("created"),
            created_by=f.opt_str("created_by"),
            author=f.opt_str("author"),
            comment=f.opt_str("comment"),
            empty_layer=bool(f.opt_bool("empty_layer")),
            extra=f.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        put(out, "created", self.created)
        put(out, "created_by", self.created_by)
        put(out, "author", self.author)
        put(out, "comment", self.comment)
        if self.empty_layer:
            out["empty_layer"] = True
        return out


@dataclass
class ImageConfig(_Model):
    """The image configuration blob (OCI `OCI_CONFIG`, Docker `DOCKER_CONFIG`: same document)."""

    architecture: str
    os: str
    rootfs: RootFS = field(default_factory=RootFS)
    config: ContainerConfig = field(default_factory=ContainerConfig)
    history: list[History] = field(default_factory=list)
    created: str | None = None
    author: str | None = None
    variant: str | None = None
    os_version: str | None = None
    os_features: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: object, where: str) -> Self:
        f = Fields(obj, where)
        rootfs = f.raw("rootfs")
        if rootfs is None:
            raise OCIError(f"{f.path('rootfs')}: required field is missing")
        config = f.raw("config")
        return cls(
            architecture=f.req_str("architecture"),
            os=f.req_str("os"),
            rootfs=RootFS.parse(rootfs, f.path("rootfs")),
            config=ContainerConfig() if config is None else ContainerConfig.parse(config, f.path("config")),
            history=[History.parse(item, path) for item, path in _objects(f, "history")],
            created=f.opt_str("created"),
            author=f.opt_str("author"),
            variant=f.opt_str("variant"),
            os_version=f.opt_str("os.version"),
            os_features=f.opt_str_list("os.features") or [],
            extra=f.extra(),
        )

    @classmethod
    def _where(cls) -> str:
        return "config"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["architecture"] = self.architecture
        out["os"] = self.os
        out["rootfs"] = self.rootfs.to_dict()
        out["config"] = self.config.to_dict()
        put(out, "history", [h.to_dict() for h in self.history])
        put(out, "created", self.created)
        put(out, "author", self.author)
        put(out, "variant", self.variant)
        put(out, "os.version", self.os_version)
        put(out, "os.features", self.os_features)
        return out
