"""Co-visitation, counted as the swipes arrive: "people who watched what you just watched
watched this next".

Every watched video (a play past the early-skip mark) pairs with the same user's last
`PAIR_WINDOW` watched ones; each pair counts once for both items. A user's co-visited
candidates are the summed neighbour counts of their last `QUERY` watched videos: the
short-term, order-aware signal that an item-kNN over whole histories lacks (on the MovieLens
replay it finds the next item about twice as often; bench/RESULTS.md). Each item keeps at
most `MAX_NEIGHBOURS` neighbours: past twice that, the weakest half is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

from swipeloop.arrays import Codes, Floats

PAIR_WINDOW = 10  # a watched video pairs with the user's last this many
QUERY = 5  # the last watched videos a feed asks about
MAX_NEIGHBOURS = 50


class CoVisits:
    """Pair counts between item codes; safe to add from one thread while others read."""

    def __init__(self, max_neighbours: int = MAX_NEIGHBOURS) -> None:
        self._max = max_neighbours
        self._neighbours: dict[int, dict[int, float]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._neighbours)

    def add(self, watched: Iterable[int], item: int) -> None:
        """`item` was watched after `watched` (that user's recent videos, oldest first)."""
        others = [j for j in list(watched)[-PAIR_WINDOW:] if j != item]
        if not others:
            return
        with self._lock:
            mine = self._neighbours.setdefault(item, {})
            for j in others:
                mine[j] = mine.get(j, 0.0) + 1.0
                theirs = self._neighbours.setdefault(j, {})
                theirs[item] = theirs.get(item, 0.0) + 1.0
                if len(theirs) > 2 * self._max:
                    self._neighbours[j] = _strongest(theirs, self._max)
            if len(mine) > 2 * self._max:
                self._neighbours[item] = _strongest(mine, self._max)

    def neighbours(self, item: int) -> dict[int, float]:
        """One item's co-visited items and counts (a copy)."""
        with self._lock:
            return dict(self._neighbours.get(item, {}))

    def scores(self, watched: Iterable[int]) -> tuple[Codes, Floats]:
        """Items co-visited with the last `QUERY` of `watched` (those left out), best first,
        and their scores: summed counts over the strongest, scaled to (0, 1]."""
        recent = list(watched)[-QUERY:]
        totals: dict[int, float] = {}
        with self._lock:
            for j in recent:
                for k, count in self._neighbours.get(j, {}).items():
                    totals[k] = totals.get(k, 0.0) + count
        for j in recent:
            totals.pop(j, None)
        if not totals:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        codes = np.fromiter(totals.keys(), np.int64, len(totals))
        scores = np.fromiter(totals.values(), np.float64, len(totals))
        order = np.lexsort((codes, -scores))  # best first; ties by code
        return codes[order], scores[order] / scores[order[0]]


def _strongest(counts: dict[int, float], keep: int) -> dict[int, float]:
    """The `keep` largest counts (ties: the smaller code)."""
    best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
    return dict(best)


def lookup(codes: Codes, found: Codes, scores: Floats) -> Floats:
    """Each of `codes`' score among (`found`, `scores`), 0 where it is not found."""
    out = np.zeros(len(codes), dtype=np.float64)
    if not len(found) or not len(codes):
        return out
    order = np.argsort(found)
    at = np.searchsorted(found[order], codes)
    at = np.minimum(at, len(found) - 1)
    hit = found[order][at] == codes
    out[hit] = scores[order][at[hit]]
    return out
