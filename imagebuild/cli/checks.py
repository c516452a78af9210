"""Checks of what a user gave on the command line, shared by the commands: KEY=VALUE pairs, the build's
epoch, image names, the Dockerfile and its context."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from imagebuild.errors import BuildError
from imagebuild.store.images import normalize_tag

NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?$")


def key_values(items: Sequence[str], what: str) -> dict[str, str]:
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BuildError(f"{what} '{item}' is not KEY=VALUE")
        result[key] = value
    return result


def epoch(timestamp: str | None) -> int | None:
    """The build's epoch: --timestamp, else SOURCE_DATE_EPOCH, else None (real times, dated now)."""
    if timestamp is not None:
        if not timestamp.isdigit():
            raise BuildError(f"--timestamp '{timestamp}' is not a number of seconds since 1970")
        return int(timestamp)
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise BuildError(f"SOURCE_DATE_EPOCH='{value}' is not a number of seconds: unset it or fix it")
    return int(value)


def check_names(names: Sequence[str], flag: str = "-t ") -> None:
    for name in names:
        if not NAME.match(normalize_tag(name)):
            raise BuildError(
                f"{flag}'{name}' is not an image name: use lowercase letters, digits and . _ - / with an "
                "optional :tag (e.g. demo-app:1.0)"
            )


def find_dockerfile(context: str | None, file: str | None) -> str:
    """The Dockerfile to read, once the context (when given) is a directory; one line naming what is missing."""
    if context is not None:
        if not os.path.exists(context):
            raise BuildError(f"build context '{context}' does not exist: give the directory to build from")
        if not os.path.isdir(context):
            raise BuildError(
                f"build context '{context}' is not a directory: give the directory to build from "
                "(and the Dockerfile with -f)"
            )
    if file is not None:
        if not os.path.exists(file):
            raise BuildError(f"-f '{file}' does not exist: name the Dockerfile to use")
        if not os.path.isfile(file):
            raise BuildError(f"-f '{file}' is not a file: name the Dockerfile itself")
        return str(file)
    dockerfile = os.path.join(context or ".", "Dockerfile")
    if not os.path.isfile(dockerfile):
        raise BuildError(f"no Dockerfile at '{dockerfile}': write one, or name it with -f")
    return dockerfile
