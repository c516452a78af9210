"""Errors of the layer package."""

from __future__ import annotations


class LayerError(Exception):
    """A layer directory or layer tar that cannot be converted; the message names the offending entry."""
