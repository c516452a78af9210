"""Layer directories <-> layer tars: deterministic OCI tars out, safe atomic extraction in."""

from imagebuild.layer.errors import LayerError
from imagebuild.layer.extract import extract_layer_tar
from imagebuild.layer.gzipped import compress_gzip
from imagebuild.layer.tar import (
    ZSTD_AVAILABLE,
    compress_zstd,
    layer_digests,
    layer_headers,
    settle_mtimes,
    write_layer_tar,
)

__all__ = [
    "ZSTD_AVAILABLE",
    "LayerError",
    "compress_gzip",
    "compress_zstd",
    "extract_layer_tar",
    "layer_digests",
    "layer_headers",
    "settle_mtimes",
    "write_layer_tar",
]
