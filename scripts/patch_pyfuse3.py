"""Rebuild the installed pyfuse3 with six small patches.

1. readdir() learns the directory's inode when there is no opendir handler. pyfuse3 hands readdir() only the
   file handle opendir() returned. A filesystem that answers opendir with ENOSYS gets the kernel's readdir cache
   (FOPEN_CACHE_DIR) and no opendir/releasedir round trips at all (Linux 5.1+), but then every readdir arrives
   with handle 0. With this patch pyfuse3 passes the inode in its place and says so in
   `pyfuse3.READDIR_INODE_WITHOUT_OPENDIR`.
2. Written data goes from libfuse's receive buffer to the file without passing through Python. pyfuse3 copies
   every WRITE request's data into a new bytes object, and the handler then copies it again with pwrite. With
   this patch, when the Operations object has a synchronous `write_fd(fh)` that returns a file descriptor (not
   -1), pyfuse3 has libfuse write the data into that file at the request's offset and replies itself, as
   libfuse's passthrough examples do (libfuse splices instead of copying where its pipe can hold a whole
   request; `pyfuse3_patch/write_buf.pxi`).
3. Read data goes from the file to the reply without passing through Python. pyfuse3 has the handler pread
   each READ into a bytes object and then writes that to the kernel: two copies, and a coroutine per 128 KiB.
   With this patch, when the Operations object has a synchronous `read_fd(fh)` that returns a file descriptor,
   libfuse answers the READ from that file itself, splicing the data into the reply where it can
   (`pyfuse3_patch/read_fd.pxi`), as fuse-overlayfs does.
4. No hand-over between tasks for a request that is answered at once. Each stock worker, once the next request
   is readable, passes the right to wait for the one after to another worker before it reads its own: an extra
   trip through trio's scheduler per request, even when the handler never waits. Here a worker keeps that right while
   its handlers answer without suspending, and passes it on the moment one suspends (waiting on a thread or a
   lock), so a slow request still never holds up the next (`pyfuse3_patch/session_loop.pxi`).
5. fallocate(2) reaches the filesystem. pyfuse3 has no FALLOCATE handler, so libfuse answers ENOSYS and the kernel
   refuses every later fallocate on the mount with EOPNOTSUPP. With this patch, when the Operations object has an
   async `fallocate(fh, mode, offset, length)`, pyfuse3 registers a handler that calls it
   (`pyfuse3_patch/fallocate.pxi`); without one, libfuse answers as before.
6. The umask is the filesystem's to apply. Stock, the kernel takes the umask off the mode of every new entry
   before FUSE sees it, so an entry made in a directory with a default POSIX ACL gets the umask too, where on
   ext4 the ACL replaces it. With this patch, when the Operations object has `apply_umask = True`, pyfuse3 asks
   for FUSE_CAP_DONT_MASK: the mode comes whole, with the umask beside it in the request context.

`pyfuse3.UNIONFS_PATCH_LEVEL` says which patches are in. unionfs uses them when present and works unpatched too.

Usage: python scripts/patch_pyfuse3.py   (with the venv's python; needs pip, a C compiler and libfuse3-dev)
`make install` runs it before it installs the project, so pyfuse3 is compiled once, patched. Idempotent; on any
failure it says why in one line and exits 0, and the project's install then brings the stock pyfuse3.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PATCH_LEVEL = 7  # raised with every change to EDITS, so that `make install` rebuilds an older patched pyfuse3
PARTS = Path(__file__).with_name("pyfuse3_patch")  # the new code, in Cython: read it there
REQUIREMENT = "pyfuse3>=3.3"  # as pyproject.toml asks

WRITE_BUF = (
    "cdef void fuse_write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec *bufv,\n"
    "                         off_t off, fuse_file_info *fi):\n"
)

READ = (
    "cdef void fuse_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,\n"
    "                     fuse_file_info *fi):\n"
)
INIT = "    conn.want &= ~(<unsigned> FUSE_CAP_READDIRPLUS_AUTO)\n"
CREATE = "cdef void fuse_create (fuse_req_t req, fuse_ino_t parent, const_char *name,\n"
POLL = "    fuse_ops.poll = fuse_poll\n"

# (file, from, to, new text): the stock code from `from` through `to` (or just `from` when `to` is empty) is
# replaced. A pyfuse3 without that code is left alone.
EDITS = [
    (
        "src/pyfuse3/handlers.pxi",
        "    c.off = off\n    c.fh = fi.fh\n    save_retval(fuse_readdirplus_async(c))",
        "",
        "    c.off = off\n    c.fh = fi.fh if fi.fh != 0 else ino  # no opendir (ENOSYS): name the directory\n"
        "    save_retval(fuse_readdirplus_async(c))",
    ),
    (
        "src/pyfuse3/handlers.pxi",
        WRITE_BUF,
        "",
        WRITE_BUF + (PARTS / "write_buf.pxi").read_text(),  # the new path first; the stock one stays below it
    ),
    ("src/pyfuse3/handlers.pxi", READ, "", READ + (PARTS / "read_fd.pxi").read_text()),
    (
        "src/pyfuse3/handlers.pxi",
        INIT,
        "",
        INIT + "    if getattr(operations, 'read_fd', None) is not None and conn.capable & FUSE_CAP_SPLICE_WRITE:\n"
        "        conn.want |= FUSE_CAP_SPLICE_WRITE  # read_fd's replies: splice the data, no copy in the daemon\n"
        "    if getattr(operations, 'apply_umask', False) and conn.capable & (1 << 6):\n"
        "        conn.want |= (1 << 6)  # FUSE_CAP_DONT_MASK: the umask comes in ctx.umask, the mode whole\n",
    ),
    ("src/pyfuse3/handlers.pxi", CREATE, "", (PARTS / "fallocate.pxi").read_text() + CREATE),
    (
        "src/pyfuse3/internal.pxi",
        POLL,
        "",
        POLL + "    if getattr(operations, 'fallocate', None) is not None:\n"
        "        fuse_ops.fallocate = fuse_fallocate  # (else libfuse answers ENOSYS, as stock)\n",
    ),
    (
        "src/pyfuse3/internal.pxi",
        "async def _wait_fuse_readable():\n",
        "    stdlib.free(buf.mem)\n    worker_data.task_count -= 1\n",
        (PARTS / "session_loop.pxi").read_text(),
    ),
    (
        "src/pyfuse3/__init__.pyx",
        "ROOT_INODE = FUSE_ROOT_ID\n",
        "",
        f"ROOT_INODE = FUSE_ROOT_ID\nREADDIR_INODE_WITHOUT_OPENDIR = True\nUNIONFS_PATCH_LEVEL = {PATCH_LEVEL}\n",
    ),
]


def apply(source: Path, version: str) -> None:
    for name, first, last, new in EDITS:
        path = source / name
        text = path.read_text()
        start = text.find(first)
        end = start + len(first) if not last else text.find(last, start)
        if start < 0 or end < 0:
            raise RuntimeError(f"{name} of pyfuse3 {version} does not have the expected code")
        path.write_text(text[:start] + new + text[end + len(last) :])


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


def unpack(archive: Path, into: Path) -> None:
    """Extract the sdist, refusing members that would land outside `into` (Python 3.11.2, Debian 12's, has no
    extraction filters: they came in 3.11.4)."""
    with tarfile.open(archive) as tar:
        root = into.resolve()
        for member in tar.getmembers():
            target = (into / member.name).resolve()
            if not target.is_relative_to(root) or member.issym() or member.islnk() or member.isdev():
                raise RuntimeError(f"{archive.name} holds an unexpected member {member.name!r}")
        tar.extractall(into)


def installed() -> tuple[str | None, int]:
    """The installed pyfuse3's version and patch level (None, 0 when there is none)."""
    try:
        import pyfuse3
    except ImportError:
        return None, 0
    return pyfuse3.__version__, getattr(pyfuse3, "UNIONFS_PATCH_LEVEL", 0)


def build(requirement: str, tmp: Path) -> str:
    """Download pyfuse3's source (only pyfuse3 itself: its build tools come as wheels), patch it, install it.
    Returns the version built."""
    pip("download", "--no-deps", "--no-binary", "pyfuse3", requirement, "-d", str(tmp))
    archive = next(tmp.glob("pyfuse3-*.tar.gz"))
    version = archive.name.removeprefix("pyfuse3-").removesuffix(".tar.gz")
    unpack(archive, tmp)
    source = tmp / f"pyfuse3-{version}"
    apply(source, version)
    (source / "src/pyfuse3/__init__.c").unlink(missing_ok=True)  # regenerate from the patched .pyx
    pip("install", "--no-deps", "--force-reinstall", str(source))
    return version


def main() -> int:
    version, level = installed()
    if level >= PATCH_LEVEL:
        return 0
    requirement = f"pyfuse3=={version}" if version else REQUIREMENT
    with tempfile.TemporaryDirectory() as tmp:
        try:
            version = build(requirement, Path(tmp))
        except Exception as exc:  # noqa: BLE001 (any failure at all: the stock pyfuse3 works, only slower)
            reason = " ".join(str(exc).split()) or type(exc).__name__
            print(
                f"patch_pyfuse3: keeping the stock pyfuse3 ({reason}); listings stay uncached and data passes "
                "through Python",
                file=sys.stderr,
            )
            return 0
    print(
        f"patch_pyfuse3: pyfuse3 {version} built with the patches: cached listings, direct reads and writes, "
        "fallocate, the umask left to unionfs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
