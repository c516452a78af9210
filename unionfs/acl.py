"""POSIX ACLs in their xattr form, and the rules the kernel keeps between an ACL and the mode (pure).

`system.posix_acl_access` and `system.posix_acl_default` hold a little-endian u32 version (2) and then one
(u16 tag, u16 permissions, u32 id) per entry, sorted by tag and id. The rules are the kernel's
(fs/posix_acl.c), which ext4 applies and the union filesystem applies for itself, because it keeps an ACL as a
record where it cannot keep it for real (privxattr.py):

- An access ACL of only `user::`, `group::` and `other::` is equivalent to a mode: setting one sets the mode and stores
  nothing (posix_acl_update_mode). Any access ACL sets the mode's permission bits: the owner's from `user::`,
  the group class from `mask::` (or `group::` without one), the others' from `other::`.
- chmod rewrites `user::`, `mask::` (or `group::`) and `other::` from the new mode (posix_acl_chmod).
- A new entry in a directory with a default ACL gets that ACL masked by its create mode as its access ACL and
  its mode from the result, without the umask; a new directory also gets the default ACL (posix_acl_create).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from dataclasses import dataclass

from .errors import UnionError

ACCESS = "system.posix_acl_access"
DEFAULT = "system.posix_acl_default"
NAMES = (ACCESS, DEFAULT)

VERSION = 2
USER_OBJ = 0x01
USER = 0x02
GROUP_OBJ = 0x04
GROUP = 0x08
MASK = 0x10
OTHER = 0x20
UNDEFINED_ID = 0xFFFFFFFF
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
_TAGS = (USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER)


@dataclass(frozen=True, slots=True)
class Entry:
    tag: int
    perm: int  # rwx as 4|2|1
    id: int = UNDEFINED_ID


Acl = tuple[Entry, ...]


def parse(value: bytes) -> Acl:
    """The entries of an ACL xattr value; EINVAL for a value that is not a valid ACL."""
    if len(value) < _HEADER.size or (len(value) - _HEADER.size) % _ENTRY.size:
        raise UnionError(errno.EINVAL, "malformed POSIX ACL")
    if _HEADER.unpack_from(value)[0] != VERSION:
        raise UnionError(errno.EOPNOTSUPP, "unknown POSIX ACL version")
    entries = tuple(
        Entry(tag, perm & 7, ident if tag in (USER, GROUP) else UNDEFINED_ID)
        for tag, perm, ident in _ENTRY.iter_unpack(value[_HEADER.size :])
    )
    if any(entry.tag not in _TAGS for entry in entries):
        raise UnionError(errno.EINVAL, "unknown POSIX ACL entry")
    return entries


def encode(entries: Acl) -> bytes:
    return _HEADER.pack(VERSION) + b"".join(_ENTRY.pack(e.tag, e.perm, e.id) for e in entries)


def _find(entries: Acl, tag: int) -> Entry | None:
    return next((e for e in entries if e.tag == tag), None)


def equivalent(entries: Acl) -> bool:
    """Whether an access ACL is stored as a mode alone: no named users or groups and no mask (the kernel keeps
    an ACL with a mask even when it names no one: posix_acl_equiv_mode)."""
    return not any(e.tag in (USER, GROUP, MASK) for e in entries)


def mode_bits(entries: Acl) -> int:
    """The permission bits (0o777) an access ACL gives the mode."""
    bits = 0
    for entry in entries:
        if entry.tag == USER_OBJ:
            bits |= entry.perm << 6
        elif (entry.tag == GROUP_OBJ and _find(entries, MASK) is None) or entry.tag == MASK:
            bits |= entry.perm << 3
        elif entry.tag == OTHER:
            bits |= entry.perm
    return bits


def with_mode(mode: int, entries: Acl) -> int:
    """`mode` (type and special bits kept) with the permission bits an access ACL gives."""
    return (mode & ~0o777) | mode_bits(entries)


def chmod(entries: Acl, mode: int) -> Acl:
    """An access ACL after chmod to `mode`."""
    has_mask = _find(entries, MASK) is not None
    changed = []
    for entry in entries:
        if entry.tag == USER_OBJ:
            entry = Entry(USER_OBJ, (mode >> 6) & 7)
        elif entry.tag == MASK or (entry.tag == GROUP_OBJ and not has_mask):
            entry = Entry(entry.tag, (mode >> 3) & 7)
        elif entry.tag == OTHER:
            entry = Entry(OTHER, mode & 7)
        changed.append(entry)
    return tuple(changed)


def inherit(default: Acl, mode: int) -> tuple[Acl | None, int]:
    """What a new entry created with `mode` in a directory with `default` gets: its access ACL (None when
    the result says no more than the mode) and its mode (type and special bits kept from `mode`)."""
    bits = mode & 0o777
    group_class: Entry | None = _find(default, MASK) or _find(default, GROUP_OBJ)
    access = []
    for entry in default:
        if entry.tag == USER_OBJ:
            entry = Entry(USER_OBJ, entry.perm & (bits >> 6))
            bits &= (entry.perm << 6) | ~0o700
        elif entry.tag == OTHER:
            entry = Entry(OTHER, entry.perm & bits)
            bits &= entry.perm | ~0o007
        elif entry is group_class:
            entry = Entry(entry.tag, entry.perm & (bits >> 3))
        access.append(entry)
    if group_class is not None:
        perm = next(e.perm for e in access if e.tag == group_class.tag)
        bits &= (perm << 3) | ~0o070
    return (None if equivalent(tuple(access)) else tuple(access)), (mode & ~0o777) | (bits & 0o777)


def map_ids(value: bytes, uid: Callable[[int], int], gid: Callable[[int], int]) -> bytes:
    """An ACL value with the ids of its named users and groups mapped (between the ids a mount shows and those
    its layers store); a value that is no ACL passes as it is."""
    try:
        entries = parse(value)
    except OSError:
        return value
    mapped = tuple(
        Entry(e.tag, e.perm, uid(e.id) if e.tag == USER else gid(e.id) if e.tag == GROUP else e.id) for e in entries
    )
    return encode(mapped)


def permits(entries: Acl, st_uid: int, st_gid: int, uid: int, gids: set[int] | frozenset[int], mask: int) -> bool:
    """The kernel's access check with an access ACL (posix_acl_permission), for a process other than root."""
    limit = _find(entries, MASK)
    cap = 7 if limit is None else limit.perm
    if uid == st_uid:
        owner = _find(entries, USER_OBJ)
        return owner is not None and owner.perm & mask == mask
    named = next((e for e in entries if e.tag == USER and e.id == uid), None)
    if named is not None:
        return named.perm & cap & mask == mask
    found = False
    for entry in entries:
        if (entry.tag == GROUP_OBJ and st_gid in gids) or (entry.tag == GROUP and entry.id in gids):
            found = True
            if entry.perm & cap & mask == mask:
                return True
    if found:
        return False
    other = _find(entries, OTHER)
    return other is not None and other.perm & mask == mask
