"""Co-visitation, counted as the swipes arrive: "people who watched what you just watched
watched this next", the sequence-aware signal an item-kNN over whole histories lacks.

pairs     every watched video (a play past the early-skip mark) pairs with the same user's
          last `window` watched ones, the one just before it weighing 1, each step further
          back `gap_decay` times less; a pair counts for both items
scores    a user's co-visited candidates: over their last `query` watched videos (the newest
          weighing 1, each older one `query_decay` times less), the summed pair weights,
          each divided by both items' plays to the power `popularity` (0: raw counts, 0.5:
          cosine), scaled so the best is 1
cap       an item keeps at most `max_neighbours`: past twice that, the weakest half goes

The constants are chosen on the MovieLens replay's validation split (each user's
second-to-last item; `sim.tuning`), never on its test split (bench/RESULTS.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from swipeloop.arrays import Codes, Floats
from swipeloop.settings import Settings

REMEMBERED = 50  # a user's last watched videos a replica keeps: `window` and `query` at most


@dataclass(frozen=True)
class CoVisitConfig:
    """How pairs are weighed and a user's candidates scored (see the module)."""

    window: int = 10
    gap_decay: float = 0.9
    popularity: float = 0.3
    query: int = 10
    query_decay: float = 0.7
    max_neighbours: int = 100

    @classmethod
    def of(cls, settings: Settings) -> CoVisitConfig:
        """The constants `settings` name (`covisit_*`)."""
        return cls(
            window=settings.covisit_window,
            gap_decay=settings.covisit_gap_decay,
            popularity=settings.covisit_popularity,
            query=settings.covisit_query,
            query_decay=settings.covisit_query_decay,
        )


class CoVisits:
    """Pair weights between item codes; safe to add from one thread while others read."""

    def __init__(self, config: CoVisitConfig | None = None) -> None:
        self.config = config or CoVisitConfig()
        self._neighbours: dict[int, dict[int, float]] = {}
        self._plays = np.zeros(1024, dtype=np.float64)  # by code
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._neighbours)

    def add(self, watched: Iterable[int], item: int) -> None:
        """`item` was watched after `watched` (that user's recent videos, oldest first)."""
        c = self.config
        before = list(watched)[-c.window :]
        with self._lock:
            if item >= len(self._plays):
                grown = np.zeros(max(2 * len(self._plays), item + 1), dtype=np.float64)
                grown[: len(self._plays)] = self._plays
                self._plays = grown
            self._plays[item] += 1
            mine = self._neighbours.setdefault(item, {})
            for gap, j in enumerate(reversed(before)):
                if j == item:
                    continue
                weight = c.gap_decay**gap
                mine[j] = mine.get(j, 0.0) + weight
                theirs = self._neighbours.setdefault(j, {})
                theirs[item] = theirs.get(item, 0.0) + weight
                if len(theirs) > 2 * c.max_neighbours:
                    self._neighbours[j] = _strongest(theirs, c.max_neighbours)
            if len(mine) > 2 * c.max_neighbours:
                self._neighbours[item] = _strongest(mine, c.max_neighbours)

    def neighbours(self, item: int) -> dict[int, float]:
        """One item's co-visited items and pair weights (a copy)."""
        with self._lock:
            return dict(self._neighbours.get(item, {}))

    def scores(self, watched: Iterable[int]) -> tuple[Codes, Floats]:
        """Items co-visited with the last `query` of `watched` (those left out), best first,
        and their scores, scaled to (0, 1]."""
        c = self.config
        recent = list(watched)[-c.query :]
        asked: dict[int, float] = {}
        for age, j in enumerate(reversed(recent)):
            asked.setdefault(j, c.query_decay**age)  # a video watched twice: its newest
        found, weights = [], []
        with self._lock:
            for j, recency in asked.items():
                pairs = self._neighbours.get(j)
                if pairs:
                    found.append(np.fromiter(pairs.keys(), np.int64, len(pairs)))
                    weights.append(
                        np.fromiter(pairs.values(), np.float64, len(pairs))
                        * (recency / self._divisor(np.array([j]))[0])
                    )
            if not found:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
            codes, at = np.unique(np.concatenate(found), return_inverse=True)
            scores = np.bincount(at, weights=np.concatenate(weights)) / self._divisor(codes)
        keep = ~np.isin(codes, np.fromiter(asked, np.int64, len(asked)))
        codes, scores = codes[keep], scores[keep]
        if not len(codes):
            return codes, scores
        order = np.lexsort((codes, -scores))  # best first; ties by code
        return codes[order], scores[order] / scores[order[0]]

    def _divisor(self, codes: Codes) -> Floats:
        """Each item's plays (at least 1) to the power `popularity`."""
        known = codes < len(self._plays)
        plays = np.ones(len(codes), dtype=np.float64)
        plays[known] = np.maximum(self._plays[codes[known]], 1.0)
        return np.asarray(plays**self.config.popularity, dtype=np.float64)


def _strongest(weights: dict[int, float], keep: int) -> dict[int, float]:
    """The `keep` largest weights (ties: the smaller code)."""
    best = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
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
