"""Dockerfile lint: rules with ids and severities, `FILE:LINE` findings with a why and a fix, and what the build
context costs.

Every instruction makes a layer and layers are read-only, so what one layer adds a later one cannot take back;
the layer cache is reused only until an instruction's inputs change; the whole context is read before a build.
The rules teach exactly that. Pure: reads the Dockerfile and walks the context, prints nothing.
"""

from __future__ import annotations

from .command import command
from .engine import failing, lint
from .ignorefile import DockerIgnore, IgnoreFileError
from .model import ContextSummary, FileSize, Finding, LintReport, Rule, Severity, Suggestion
from .render import render_json, render_text
from .rules import ALL_RULES, RULES

__all__ = [
    "ALL_RULES",
    "RULES",
    "ContextSummary",
    "DockerIgnore",
    "FileSize",
    "Finding",
    "IgnoreFileError",
    "LintReport",
    "Rule",
    "Severity",
    "Suggestion",
    "command",
    "failing",
    "lint",
    "render_json",
    "render_text",
]
