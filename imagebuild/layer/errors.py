"""Errors of the layer package."""

from __future__ import annotations

from imagebuild.errors import ImagebuildError


class LayerError(ImagebuildError):
    """A layer directory or layer tar that cannot be converted; the message names the offending entry."""
