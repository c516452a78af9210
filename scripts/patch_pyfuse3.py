"""Rebuild the installed pyfuse3 with one small patch: readdir() learns the directory's inode when there is no
opendir handler.

Why: pyfuse3 hands readdir() only the file handle opendir() returned. A filesystem that answers opendir with
ENOSYS gets the kernel's readdir cache (FOPEN_CACHE_DIR) and no opendir/releasedir round trips at all (Linux
5.1+), but then every readdir arrives with handle 0. With this patch pyfuse3 passes the inode in its place and
says so in `pyfuse3.READDIR_INODE_WITHOUT_OPENDIR`; unionfs uses it when present and works unpatched too.

Usage: python scripts/patch_pyfuse3.py   (with the venv's python; needs pip, a C compiler and libfuse3-dev)
Idempotent; on any failure it leaves the stock pyfuse3 in place, says why, and exits 0.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

EDITS = {
    "src/pyfuse3/handlers.pxi": (
        "    c.off = off\n    c.fh = fi.fh\n    save_retval(fuse_readdirplus_async(c))",
        "    c.off = off\n    c.fh = fi.fh if fi.fh != 0 else ino  # no opendir (ENOSYS): name the directory\n"
        "    save_retval(fuse_readdirplus_async(c))",
    ),
    "src/pyfuse3/__init__.pyx": (
        "ROOT_INODE = FUSE_ROOT_ID\n",
        "ROOT_INODE = FUSE_ROOT_ID\nREADDIR_INODE_WITHOUT_OPENDIR = True\n",
    ),
}


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


def main() -> int:
    try:
        import pyfuse3
    except ImportError:
        print("patch_pyfuse3: pyfuse3 is not installed; nothing to patch", file=sys.stderr)
        return 0
    if getattr(pyfuse3, "READDIR_INODE_WITHOUT_OPENDIR", False):
        return 0
    version = pyfuse3.__version__
    with tempfile.TemporaryDirectory() as tmp:
        try:
            pip("download", "--no-deps", "--no-binary", ":all:", f"pyfuse3=={version}", "-d", tmp)
            archive = next(Path(tmp).glob("pyfuse3-*.tar.gz"))
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            source = Path(tmp) / f"pyfuse3-{version}"
            for name, (old, new) in EDITS.items():
                path = source / name
                text = path.read_text()
                if old not in text:
                    raise RuntimeError(f"{name} of pyfuse3 {version} does not have the expected code")
                path.write_text(text.replace(old, new, 1))
            (source / "src/pyfuse3/__init__.c").unlink(missing_ok=True)  # regenerate from the patched .pyx
            pip("install", "--no-deps", "--force-reinstall", str(source))
        except (subprocess.CalledProcessError, OSError, RuntimeError, StopIteration) as exc:
            print(
                f"patch_pyfuse3: kept the stock pyfuse3 {version} ({exc}); directory listings stay uncached",
                file=sys.stderr,
            )
            return 0
    print(f"patch_pyfuse3: pyfuse3 {version} rebuilt: the kernel now caches directory listings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
