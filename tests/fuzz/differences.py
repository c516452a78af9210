"""Every difference between our mount and kernel overlayfs that the fuzzer accepts, in one place.

Intended differences (where we are deliberately better than the kernel, or where a value is not ours to fix):

DIRECTORY_RENAME
    Kernel overlayfs (redirect_dir=off, its default) answers EXDEV when a directory that exists in a lower
    layer (a lower or merged directory) is renamed; fuse-overlayfs does too. We rename it (ARCHITECTURE
    section 3: apt, rustup, conda and pip rely on it). Where the kernel says EXDEV to a rename, the plain
    directory model decides what the answer must be, and the kernel is brought to the same state the way
    `mv` does it after EXDEV (copy the tree with `cp -a`, then delete the source). Where that cannot make it
    the same (RENAME_EXCHANGE, or hard links inside the moved tree), the oracle is retired for the rest of the
    example and the model alone is the reference.

HARD_LINKS
    Names of one file keep sharing one inode through copy-up and remount here. Kernel overlayfs (index=off)
    breaks hard links between lower names on copy-up; when the kernel's copy of a hard-linked tree had to be
    re-created by `cp -a` (above) its links are gone too. Link counts and shared data are then compared with
    the model, never with the kernel.

ACL_REMOVAL
    Removing a POSIX ACL an entry does not have: ext4 answers success, kernel overlayfs ENODATA when the entry
    is still in a lower layer (it looks there and copies nothing up). We answer as ext4 does; there the model
    decides.

Values never compared (not promised equal by anyone):
    st_ino and st_dev            each implementation numbers its own inodes (our own promise, readdir d_ino
                                 equal to st_ino, is checked on our mount alone, and st_ino must not change
                                 when an entry is copied up)
    st_atime, st_ctime           change with every access / metadata change, at different instants
    st_mtime when not explicit   a write sets "now", which differs by microseconds between two mounts; times
                                 set by the layers or utime (all older than the example) are compared
    directory st_size, st_mtime  depend on the backing filesystem's directory format and on whiteouts
    directory st_nlink           a merged directory reports 1 here, as overlayfs does; the model counts
                                 subdirectories
    fifo st_mtime                FIFO_TIMES: data written through a fifo never reaches a FUSE daemon (the
                                 kernel runs the pipe, and keeps no times of its own for FUSE inodes), so a
                                 fifo's mtime stays what it was on our mount and fuse-overlayfs, where a
                                 local filesystem and kernel overlayfs set it to the time of the write

Never generated (would differ by design, documented in README "Writing"):
    names starting with `.wh.`   we refuse them (EINVAL: they would read as whiteouts), the kernel stores them
    xattrs `user.overlay.*` etc. union bookkeeping: we hide and refuse them, the kernel (without userxattr)
                                 treats them as plain user xattrs
    absolute symlink targets     an operation following one would touch the host
    fallocate COLLAPSE_RANGE,    the kernel's FUSE client refuses them (EOPNOTSUPP) before any FUSE filesystem is
    INSERT_RANGE                 asked; ext4 and kernel overlayfs do them

Known bugs: none open. While a bug the fuzzer found is open, add a KNOWN_BUG_* flag here (True, with a
reproducer in its comment) and have the state machine stop generating the pattern that shows it, so the rest of
the space keeps being explored; delete the flag once the bug is fixed.
"""

from __future__ import annotations

from typing import Any

Outcome = tuple[Any, ...]

# -- intended differences ---------------------------------------------------------------------------------------

DIRECTORY_RENAME = "DIRECTORY_RENAME"
HARD_LINKS = "HARD_LINKS"


ACL_REMOVAL = "ACL_REMOVAL"


def model_decides_acl_removal(oracle: Outcome | None) -> str | None:
    """ACL_REMOVAL: when the kernel answers ENODATA to removing an ACL, the model says what must happen."""
    if oracle == ("err", "ENODATA"):
        return ACL_REMOVAL
    return None


def model_decides_rename(oracle: Outcome) -> str | None:
    """DIRECTORY_RENAME: when the kernel refuses a rename with EXDEV, the model says what must happen."""
    if oracle == ("err", "EXDEV"):
        return DIRECTORY_RENAME
    return None
