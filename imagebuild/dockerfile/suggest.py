"""Suggesting the closest known word for a misspelt one ("did you mean RUN?")."""

from __future__ import annotations

from collections.abc import Iterable


def closest(word: str, options: Iterable[str]) -> str | None:
    """The option nearest to ``word`` (case-insensitive), if it is near enough to be a typo.

    Near enough: at most 2 edits, and fewer edits than the word has letters.
    """
    best: str | None = None
    best_distance = min(3, len(word))
    for option in options:
        distance = edit_distance(word.lower(), option.lower())
        if distance < best_distance:
            best, best_distance = option, distance
    return best


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, counting a swap of two neighbouring letters as one edit."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            cost = 0 if ca == cb else 1
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                value = min(value, previous2[j - 2] + 1)
            current.append(value)
        previous2, previous = previous, current
    return previous[-1]
