"""`imagebuild`: build images from Dockerfiles, keep them in a shared layer store, mount and run them without root.

The modules of this package are the only ones of the builder that parse argv, print or exit. Every error a user
can cause is one line, `imagebuild: error: ...`, and a non-zero exit status.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """The `imagebuild` command. Imported on first call: `python -m imagebuild.cli.mountns`, which starts once
    for every RUN with mounts, loads this package and not the whole command line."""
    from imagebuild.cli.commands import main as run

    run(argv)
