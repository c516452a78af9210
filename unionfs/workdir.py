"""The work dir: our staging subdirectory in it, emptied at mount of whatever a crash left, and the probes made there
at mount time of what this process may do (give files away, make 0/0 devices, set trusted.* xattrs)."""

from __future__ import annotations

import os
import shutil
import stat

from .layers import proc_path
from .whiteout import TRUSTED_OPAQUE, USER_OPAQUE

WORK_SUBDIR = "unionfs"


def prepare_work(work: str) -> None:
    """Our staging area inside the work dir, emptied of whatever a crash left behind."""
    ours = os.path.join(work, WORK_SUBDIR)
    if os.path.isdir(ours):
        shutil.rmtree(ours)
    os.mkdir(ours, 0o700)


def opaque_xattr_for(work_fd: int) -> str:
    """The opaque xattr this process may write: the kernel's trusted one when privileged, else user.*."""
    probe = f"#probe.{os.getpid()}"
    os.mkdir(probe, 0o700, dir_fd=work_fd)
    try:
        for attr in (TRUSTED_OPAQUE, USER_OPAQUE):
            try:
                os.setxattr(proc_path(work_fd, probe), attr, b"y")
                return attr
            except OSError:
                continue
        return USER_OPAQUE
    finally:
        os.rmdir(probe, dir_fd=work_fd)


def can_chown(work_fd: int) -> bool:
    """Whether this process may give files away (root, or CAP_CHOWN over ids beyond its own)."""
    probe = f"#probe.{os.getpid()}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=work_fd))
    try:
        other = 1 if os.geteuid() != 1 else 2
        os.chown(probe, other, other, dir_fd=work_fd)
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe, dir_fd=work_fd)


def chardev_whiteouts_allowed(work_fd: int) -> bool:
    probe = f"#probe.{os.getpid()}"
    try:
        os.mknod(probe, stat.S_IFCHR, 0, dir_fd=work_fd)
    except OSError:
        return False
    os.unlink(probe, dir_fd=work_fd)
    return True
