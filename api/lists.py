"""The lists every feed reads (trending, the fresh pool), recomputed once a second off the
request path.

Each list is a named function of the item columns and of the lists before it (`COMPUTE`);
`Lists` holds each as last computed. The API's refresher thread recomputes them every
`REFRESH_S`; a request computes one itself only when it is missing or older than `STALE_S`
(a state without a refresher, as in tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from api.item_columns import ItemColumns
from models.features.counts import DAY
from models.features.exposure import FRESH_HOURS, exposure_rooms, reaction_draws
from models.features.trending import trending_scores as score_trending
from models.features.weights import COUNTERS
from swipeloop.arrays import Codes

FRESH_POOL = 1_000  # new uploads with room at their exposure stage, kept ready per second
TRENDING_DEPTH = 50_000  # items ranked by trending score, kept ready per second
REFRESH_S = 1.0  # how often the shared lists are recomputed (`Lists.refresh`)
STALE_S = 2.0  # a shared list older than this is recomputed by the request that reads it

Name = Literal[
    "trending_scores", "trending", "fresh_pool", "fresh_ranks", "catalog_order", "popular"
]


class Lists:
    """Each shared list as last computed, by name."""

    def __init__(
        self, columns: Callable[[], ItemColumns], clock: Callable[[], float] = time.time
    ) -> None:
        self._columns = columns
        self.clock = clock  # the serving state's "now" (seconds since the epoch)
        self.draws = np.random.default_rng()  # the fresh pool's Thompson draws
        self._values: dict[Name, tuple[float, npt.NDArray[Any]]] = {}  # name -> (when, value)
        self._compute_lock = threading.RLock()  # a list may read another one

    @property
    def columns(self) -> ItemColumns:
        """The item columns as they are now (the state swaps in grown ones as items arrive)."""
        return self._columns()

    def refresh(self) -> None:
        """Recompute the lists in `REFRESHED` (the API's refresher thread calls this every
        second)."""
        for name in REFRESHED:
            self._values[name] = (time.monotonic(), COMPUTE[name](self))

    def nbytes(self) -> int:
        """Bytes the lists hold as last computed."""
        return sum(value.nbytes for _, value in list(self._values.values()))

    def get(self, name: Name) -> npt.NDArray[Any]:
        """The list as last refreshed; computed here only when it is missing or the refresher
        has not run for `STALE_S`."""
        hit = self._values.get(name)
        if hit is not None and time.monotonic() - hit[0] < STALE_S:
            return hit[1]
        with self._compute_lock:
            value: npt.NDArray[Any] = COMPUTE[name](self)
            self._values[name] = (time.monotonic(), value)
        return value


def trending_scores(lists: Lists) -> npt.NDArray[np.float64]:
    """Every item's trending score by code (0 without live features)."""
    cols = lists.columns
    live = np.flatnonzero(~np.isnan(cols.as_of_s))
    scores = np.zeros(len(cols), dtype=np.float64)
    scores[live] = score_trending(cols.counts[live], cols.as_of_s[live], lists.clock())
    return scores


def trending(lists: Lists) -> Codes:
    """Items in the catalog with live features, best trending score first (the top
    `TRENDING_DEPTH`)."""
    scores, cols = lists.get("trending_scores"), lists.columns
    size = min(len(scores), len(cols))
    ranked = np.flatnonzero(~np.isnan(cols.as_of_s[:size]) & cols.alive[:size])
    if len(ranked) > TRENDING_DEPTH:
        ranked = ranked[np.argpartition(-scores[ranked], TRENDING_DEPTH)[:TRENDING_DEPTH]]
    return ranked[np.argsort(-scores[ranked], kind="stable")]


def fresh_pool(lists: Lists) -> Codes:
    """New uploads with room at their exposure stage, in the order of this second's Thompson
    draws of their audience's reaction (the first `FRESH_POOL`)."""
    cols = lists.columns
    new = np.flatnonzero(cols.alive & (cols.created_s >= lists.clock() - FRESH_HOURS * 3600))
    day = np.zeros((len(new), len(COUNTERS)), dtype=np.float32)  # unseen: all zero
    counted = ~np.isnan(cols.as_of_s[new])
    day[counted] = cols.counts[new[counted], DAY]
    room = exposure_rooms(day) > 0
    new, key = new[room], -reaction_draws(day[room], lists.draws)
    if len(new) > FRESH_POOL:
        keep = np.argpartition(key, FRESH_POOL)[:FRESH_POOL]
        new, key = new[keep], key[keep]
    return new[np.argsort(key, kind="stable")]


def fresh_ranks(lists: Lists) -> Codes:
    """Each item's place in the fresh pool by code (-1: not in it)."""
    ranks = np.full(len(lists.columns), -1, dtype=np.int64)
    pool = lists.get("fresh_pool")
    ranks[pool] = np.arange(len(pool))
    return ranks


def catalog_order(lists: Lists) -> Codes:
    """Every item in the catalog: trending first, then the rest."""
    ranked, rest = lists.get("trending"), lists.columns.alive.copy()
    rest[ranked] = False
    return np.concatenate([ranked, np.flatnonzero(rest)])


def popular(lists: Lists) -> Codes:
    """Every item in the catalog by plays in the last 24 h, most first."""
    alive = np.flatnonzero(lists.columns.alive)
    plays = lists.columns.counts[alive, DAY, COUNTERS.index("plays")]
    return alive[np.argsort(-plays, kind="stable")]


COMPUTE: dict[Name, Callable[[Lists], npt.NDArray[Any]]] = {
    "trending_scores": trending_scores,
    "trending": trending,
    "fresh_pool": fresh_pool,
    "fresh_ranks": fresh_ranks,
    "catalog_order": catalog_order,
    "popular": popular,
}
# what the refresher recomputes, in this order (a list may read one before it); `popular` is
# computed when asked (only the popularity and batch policies read it)
REFRESHED: tuple[Name, ...] = (
    "trending_scores",
    "trending",
    "fresh_pool",
    "fresh_ranks",
    "catalog_order",
)
