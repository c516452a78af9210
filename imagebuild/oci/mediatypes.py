"""Media types of the OCI image spec and of Docker's image manifest v2 schema 2."""

from __future__ import annotations

from typing import Final

# OCI image-spec v1
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
OCI_LAYOUT_VERSION: Final = "1.0.0"

# Docker image manifest v2, schema 2
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD: Final = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES: Final = frozenset({OCI_CONFIG, DOCKER_CONFIG})
UNCOMPRESSED_LAYER_TYPES: Final = frozenset({OCI_LAYER, DOCKER_LAYER})
GZIP_LAYER_TYPES: Final = frozenset({OCI_LAYER_GZIP, DOCKER_LAYER_GZIP, DOCKER_FOREIGN_LAYER_GZIP})
ZSTD_LAYER_TYPES: Final = frozenset({OCI_LAYER_ZSTD, DOCKER_LAYER_ZSTD})
LAYER_TYPES: Final = UNCOMPRESSED_LAYER_TYPES | GZIP_LAYER_TYPES | ZSTD_LAYER_TYPES


def layer_compression(media_type: str) -> str | None:
    """The compression of a layer media type: "gzip", "zstd" or None; ValueError for a non-layer type."""
    if media_type in UNCOMPRESSED_LAYER_TYPES:
        return None
    if media_type in GZIP_LAYER_TYPES:
        return "gzip"
    if media_type in ZSTD_LAYER_TYPES:
        return "zstd"
    raise ValueError(f"not a layer media type: {media_type!r}")


def layer_media_type(compression: str | None, *, docker: bool = False) -> str:
    """The layer media type for a compression ("gzip", "zstd" or None) in the OCI or Docker family."""
    table: dict[str | None, str] = (
        {None: DOCKER_LAYER, "gzip": DOCKER_LAYER_GZIP, "zstd": DOCKER_LAYER_ZSTD}
        if docker
        else {None: OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}
    )
    try:
        return table[compression]
    except KeyError:
        raise ValueError(f"unknown layer compression: {compression!r}") from None
