"""`imagebuild`: build images from Dockerfiles, keep them in a shared layer store, mount and run them without root.

The modules of this package are the only ones of the builder that parse argv, print or exit. Every error a user
can cause is one line, `imagebuild: error: ...`, and a non-zero exit status.
"""

from __future__ import annotations

from imagebuild.cli.commands import main

__all__ = ["main"]
