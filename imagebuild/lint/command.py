"""`imagebuild lint [-f FILE] [--format text|json] [--fail-on SEVERITY] [CONTEXT]` as a function.

The caller (imagebuild/cli.py) hands it argv and the two streams and exits with what it returns:
0 when no finding reaches the threshold, 1 when one does, 2 for a usage error or an unreadable input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TextIO

from imagebuild.errors import ImagebuildError

from .engine import failing, lint
from .model import Severity
from .render import render_json, render_text
from .rules import ALL_RULES

USAGE = "usage: imagebuild lint [-f FILE] [--format text|json] [--fail-on error|warning|info|style] [CONTEXT]"
HELP = f"""{USAGE}

Check a Dockerfile for mistakes and for what makes images big or builds slow; with a CONTEXT, also report
what the build would read from it.

  CONTEXT              the build context directory (default: . when -f is not given)
  -f, --file FILE      the Dockerfile (default: CONTEXT/Dockerfile)
  --format text|json   output format (default: text)
  --fail-on SEVERITY   exit 1 when a finding is at least this severe (default: warning)
  --rules              list the rules and exit

Silence rules for one instruction with a comment above it: # imagebuild-lint ignore=IB009,IB012
"""

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class UsageError(ImagebuildError):
    """A command line `imagebuild lint` refuses."""

    status = EXIT_USAGE


@dataclass
class Options:
    file: str | None = None
    context: str | None = None
    format: str = "text"
    fail_on: Severity = Severity.WARNING
    help: bool = False
    rules: bool = False


def parse_args(argv: list[str]) -> Options:
    """Raises UsageError with a one-line message."""
    options = Options()
    positional: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            positional.extend(argv[i:])
            break
        name, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if name in ("-h", "--help"):
            options.help = True
        elif name == "--rules":
            options.rules = True
        elif name in ("-f", "--file", "--format", "--fail-on"):
            if not equals:
                if i == len(argv):
                    raise UsageError(f"{name} needs a value")
                value = argv[i]
                i += 1
            _set(options, name, value)
        elif word.startswith("-f") and len(word) > 2 and not word.startswith("--"):
            options.file = word[2:]
        elif word.startswith("-") and word != "-":
            raise UsageError(f"unknown option {word}")
        else:
            positional.append(word)
    if len(positional) > 1:
        raise UsageError(f"one CONTEXT at most, got {len(positional)}: {' '.join(positional)}")
    options.context = positional[0] if positional else None
    return options


def _set(options: Options, name: str, value: str) -> None:
    if name in ("-f", "--file"):
        if not value:
            raise UsageError(f"{name} needs a file name")
        options.file = value
    elif name == "--format":
        if value not in ("text", "json"):
            raise UsageError(f"--format must be text or json, not {value!r}")
        options.format = value
    else:
        try:
            options.fail_on = Severity.parse(value)
        except ValueError as err:
            raise UsageError(f"--fail-on: {err}") from None


def _rules_text() -> str:
    return "".join(f"{rule.id}  {rule.severity.label:<7}  {rule.title}\n" for rule in ALL_RULES)


def command(argv: list[str], out: TextIO, err: TextIO) -> int:
    """Run `imagebuild lint` with ``argv`` (without the program and subcommand names)."""
    try:
        options = parse_args(argv)
    except UsageError as exc:
        err.write(f"imagebuild: error: lint: {exc} ({USAGE.removeprefix('usage: ')})\n")
        return EXIT_USAGE
    if options.help:
        out.write(HELP)
        return EXIT_OK
    if options.rules:
        out.write(_rules_text())
        return EXIT_OK
    context = options.context
    dockerfile = options.file
    if dockerfile is None:
        dockerfile = "Dockerfile" if context is None else os.path.join(context, "Dockerfile")
        context = context or "."
    if context is not None and not os.path.isdir(context):
        err.write(f"imagebuild: error: lint: build context '{context}' is not a directory\n")
        return EXIT_USAGE
    try:
        report = lint(dockerfile, context)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        err.write(f"imagebuild: error: lint: cannot read '{exc.filename or dockerfile}': {reason}\n")
        return EXIT_USAGE
    out.write(render_json(report) if options.format == "json" else render_text(report))
    return EXIT_FINDINGS if failing(report, options.fail_on) else EXIT_OK
