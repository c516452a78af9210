"""unionfs.acl: the kernel's rules between a POSIX ACL and the mode (fs/posix_acl.c), checked against what
ext4 gives for the same steps (tests/fs/test_acl.py compares through a mount)."""

from __future__ import annotations

import os

import pytest

from unionfs import acl
from unionfs.acl import GROUP, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ, Entry
from unionfs.errors import UnionError
from unionfs.permissions import READ, WRITE, allowed

MINIMAL = (Entry(USER_OBJ, 6), Entry(GROUP_OBJ, 4), Entry(OTHER, 4))
NAMED = (Entry(USER_OBJ, 6), Entry(USER, 7, 1234), Entry(GROUP_OBJ, 0), Entry(MASK, 7), Entry(OTHER, 0))


def test_round_trip_and_malformed_values() -> None:
    assert acl.parse(acl.encode(NAMED)) == NAMED
    with pytest.raises(UnionError):
        acl.parse(b"\x02\x00\x00\x00\x01")
    with pytest.raises(UnionError):
        acl.parse(acl.encode((Entry(0x40, 7),)))


def test_minimal_acl_is_a_mode_and_a_mask_is_not() -> None:
    assert acl.equivalent(MINIMAL) and acl.mode_bits(MINIMAL) == 0o644
    assert not acl.equivalent(NAMED) and acl.mode_bits(NAMED) == 0o670
    masked = (Entry(USER_OBJ, 6), Entry(GROUP_OBJ, 0), Entry(MASK, 0), Entry(OTHER, 0))
    assert not acl.equivalent(masked)  # ext4 keeps `setfacl -x` leftovers with a mask
    assert acl.with_mode(0o104755, NAMED) == 0o104670


def test_chmod_moves_the_mask_not_the_group_entry() -> None:
    assert acl.chmod(NAMED, 0o750) == (
        Entry(USER_OBJ, 7),
        Entry(USER, 7, 1234),
        Entry(GROUP_OBJ, 0),
        Entry(MASK, 5),
        Entry(OTHER, 0),
    )
    assert acl.chmod(MINIMAL, 0o751)[1] == Entry(GROUP_OBJ, 5)


def test_inheritance_masks_the_default_by_the_create_mode() -> None:
    default = (Entry(USER_OBJ, 7), Entry(USER, 7, 1234), Entry(GROUP_OBJ, 5), Entry(MASK, 7), Entry(OTHER, 5))
    access, mode = acl.inherit(default, 0o100666)
    assert mode == 0o100664
    assert access == (Entry(USER_OBJ, 6), Entry(USER, 7, 1234), Entry(GROUP_OBJ, 5), Entry(MASK, 6), Entry(OTHER, 4))
    assert acl.inherit((Entry(USER_OBJ, 7), Entry(GROUP_OBJ, 5), Entry(OTHER, 0)), 0o40777) == (None, 0o40750)


def test_named_entries_grant_within_the_mask() -> None:
    st = os.stat_result((0o100670, 0, 0, 1, 1000, 1000, 0, 0, 0, 0))
    entries = (
        Entry(USER_OBJ, 6),
        Entry(USER, 6, 1234),
        Entry(GROUP_OBJ, 0),
        Entry(GROUP, 4, 2345),
        Entry(MASK, 4),
        Entry(OTHER, 0),
    )
    assert allowed(st, 1234, set(), READ, entries) and not allowed(st, 1234, set(), WRITE, entries)
    assert allowed(st, 99, {2345}, READ, entries)
    assert not allowed(st, 99, {1000}, READ, entries)  # group:: grants nothing, and no other entry applies
    assert not allowed(st, 99, set(), READ, entries)
    assert allowed(st, 1000, set(), WRITE, entries)
