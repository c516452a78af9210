"""Rebuild the installed pyfuse3 with two small patches.

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
   request); `pyfuse3.WRITE_FD` says so.

unionfs uses both when present and works unpatched too.

Usage: python scripts/patch_pyfuse3.py   (with the venv's python; needs pip, a C compiler and libfuse3-dev)
Idempotent; on any failure it leaves the stock pyfuse3 in place, says why, and exits 0.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

WRITE_BUF_STOCK = """    cdef _Container c = _Container()
    c.req = req
    c.off = off
    c.fh = fi.fh
    buf = PyBytes_from_bufvec(bufv)
    save_retval(fuse_write_buf_async(c, buf))
"""

WRITE_BUF_SPLICED = """    cdef _Container c
    cdef fuse_bufvec dst
    cdef ssize_t res
    cdef int fd = -1
    cdef int ret
    write_fd = getattr(operations, 'write_fd', None)
    if write_fd is not None:
        try:
            fd = write_fd(fi.fh)
        except BaseException:
            fd = -1  # the handler's write() answers instead
    if fd >= 0:
        dst.count = 1
        dst.idx = 0
        dst.off = 0
        dst.buf[0].size = fuse_buf_size(bufv) - bufv.off
        dst.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK
        dst.buf[0].mem = NULL
        dst.buf[0].fd = fd
        dst.buf[0].pos = off
        res = fuse_buf_copy(&dst, bufv, 0)
        if res < 0:
            ret = fuse_reply_err(req, <int> -res)
        else:
            ret = fuse_reply_write(req, <size_t> res)
        if ret != 0:
            log.error('fuse_write_buf(): fuse_reply_* failed with %s', strerror(-ret))
        return
""" + WRITE_BUF_STOCK.replace("    cdef _Container c = _Container()\n", "    c = _Container()\n")

EDITS = [
    (
        "src/pyfuse3/handlers.pxi",
        "    c.off = off\n    c.fh = fi.fh\n    save_retval(fuse_readdirplus_async(c))",
        "    c.off = off\n    c.fh = fi.fh if fi.fh != 0 else ino  # no opendir (ENOSYS): name the directory\n"
        "    save_retval(fuse_readdirplus_async(c))",
    ),
    ("src/pyfuse3/handlers.pxi", WRITE_BUF_STOCK, WRITE_BUF_SPLICED),
    (
        "src/pyfuse3/__init__.pyx",
        "ROOT_INODE = FUSE_ROOT_ID\n",
        "ROOT_INODE = FUSE_ROOT_ID\nREADDIR_INODE_WITHOUT_OPENDIR = True\nWRITE_FD = True\n",
    ),
]
MARKERS = ("READDIR_INODE_WITHOUT_OPENDIR", "WRITE_FD")


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


def main() -> int:
    try:
        import pyfuse3
    except ImportError:
        print("patch_pyfuse3: pyfuse3 is not installed; nothing to patch", file=sys.stderr)
        return 0
    if all(getattr(pyfuse3, marker, False) for marker in MARKERS):
        return 0
    version = pyfuse3.__version__
    with tempfile.TemporaryDirectory() as tmp:
        try:
            pip("download", "--no-deps", "--no-binary", ":all:", f"pyfuse3=={version}", "-d", tmp)
            archive = next(Path(tmp).glob("pyfuse3-*.tar.gz"))
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            source = Path(tmp) / f"pyfuse3-{version}"
            for name, old, new in EDITS:
                path = source / name
                text = path.read_text()
                if old not in text:
                    raise RuntimeError(f"{name} of pyfuse3 {version} does not have the expected code")
                path.write_text(text.replace(old, new, 1))
            (source / "src/pyfuse3/__init__.c").unlink(missing_ok=True)  # regenerate from the patched .pyx
            pip("install", "--no-deps", "--force-reinstall", str(source))
        except (subprocess.CalledProcessError, OSError, RuntimeError, StopIteration) as exc:
            print(
                f"patch_pyfuse3: kept the stock pyfuse3 {version} ({exc}); "
                "listings stay uncached and written data passes through Python",
                file=sys.stderr,
            )
            return 0
    print(f"patch_pyfuse3: pyfuse3 {version} rebuilt: cached listings, direct writes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
