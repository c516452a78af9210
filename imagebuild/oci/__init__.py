"""OCI image models, media types and digests (JSON in: validated; JSON out: canonical)."""

from imagebuild.oci.digest import DigestError, sha256_digest, validate_digest, validate_sha256
from imagebuild.oci.fields import OCIError, canonical_json
from imagebuild.oci.models import (
    ContainerConfig,
    Descriptor,
    Healthcheck,
    History,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    RootFS,
    descriptor_for,
)

__all__ = [
    "ContainerConfig",
    "Descriptor",
    "DigestError",
    "Healthcheck",
    "History",
    "ImageConfig",
    "Index",
    "Manifest",
    "OCIError",
    "Platform",
    "RootFS",
    "canonical_json",
    "descriptor_for",
    "sha256_digest",
    "validate_digest",
    "validate_sha256",
]
