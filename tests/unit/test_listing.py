"""Directory offsets: a reader resuming at the offset it last got misses nothing when other entries go."""

from __future__ import annotations

from unionfs.listing import FIRST_COOKIE, Listing, name_cookie


def test_offsets_are_distinct_increasing_and_clear_of_dot_entries() -> None:
    listing = Listing([f"n{i}" for i in range(5000)], str)
    assert listing.cookies == sorted(listing.cookies)
    assert len(set(listing.cookies)) == 5000
    assert min(listing.cookies) >= FIRST_COOKIE and max(listing.cookies) < 2**63
    assert listing.after(0) == listing.after(2) == 0
    assert listing.after(listing.cookies[-1]) == 5000


def test_a_reader_resuming_after_removals_gets_every_remaining_entry_once() -> None:
    everything = [f"file-{i}" for i in range(300)]
    first = Listing(everything, str)
    read = first.entries[:100]  # a first batch, then the reader's offset is the last one it got
    offset = first.cookies[99]
    gone = set(read[:60]) | set(first.entries[150:160])  # some read, some not yet read
    second = Listing([n for n in everything if n not in gone], str)
    rest = second.entries[second.after(offset) :]
    assert sorted(read + rest) == sorted(set(everything) - set(first.entries[150:160]))


def test_the_offset_of_a_name_does_not_depend_on_its_neighbours() -> None:
    a = Listing(["x", "y", "z"], str)
    b = Listing(["y"], str)
    assert a.cookies[a.entries.index("y")] == b.cookies[0] == name_cookie("y")
