"""Choosing the co-visitation constants on a validation split, never on the test: the replay
holds out each user's last rating for its figures, so the choice is made with each user's
second-to-last one held out of the rest (pure, deterministic).

The candidates are scored by the very `models.covisit.CoVisits` the feed replicas keep,
fed the same watched videos in the same order as the replayed swipes would feed them; a
user's list is their co-visited items, filled up by popularity (the feed's trending source),
what they rated left out.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace

import numpy as np

from models.covisit import REMEMBERED, CoVisitConfig, CoVisits
from models.features.weights import PLAY_KINDS, early_skip_ms
from sim.movielens import (
    REPLAY_DURATION_MS,
    Ratings,
    hit_rate_and_ndcg,
    leave_last_out,
    swipes,
    time_order,
)

K = 10
Split = Callable[[Ratings], tuple[Ratings, dict[int, int]]]  # (replayed, held-out item by user)
# the constants tried (every combination); window and query stay at 10
GRID: dict[str, tuple[float, ...]] = {
    "gap_decay": (0.8, 0.9, 1.0),
    "popularity": (0.0, 0.3, 0.5),
    "query_decay": (0.7, 0.9),
}


@dataclass(frozen=True)
class Tried:
    """One combination's validation figures."""

    config: CoVisitConfig
    hr_at_10: float
    ndcg_at_10: float


def covisits(train: Ratings, config: CoVisitConfig) -> tuple[CoVisits, dict[int, deque[int]]]:
    """The co-visitation a replica holds after the replayed `train`, and each user's last
    watched item ids."""
    kept = {rating: watched_rating(rating) for rating in np.unique(train.ratings).tolist()}
    model = CoVisits(config)
    last: dict[int, deque[int]] = {}
    for row in time_order(train).tolist():
        if not kept[float(train.ratings[row])]:
            continue
        user, item = int(train.users[row]), int(train.items[row])
        mine = last.setdefault(user, deque(maxlen=REMEMBERED))
        model.add(mine, item)
        mine.append(item)
    return model, last


def watched_rating(rating: float) -> bool:
    """Whether a rating is replayed as a watched video (`sim.movielens.SWIPES`)."""
    played = (share * REPLAY_DURATION_MS for kind, share in swipes(rating) if kind in PLAY_KINDS)
    return any(ms >= early_skip_ms(REPLAY_DURATION_MS) for ms in played)


@dataclass(frozen=True)
class Known:
    """What the replayed ratings say beside co-visitation: who rated what, and the items by
    how often they were rated (the fill-up), computed once for every combination tried."""

    rated: dict[int, set[int]]
    popular: list[int]

    @classmethod
    def of(cls, train: Ratings) -> Known:
        items, counts = np.unique(train.items, return_counts=True)
        rated: dict[int, set[int]] = {}
        for user, item in zip(train.users.tolist(), train.items.tolist(), strict=True):
            rated.setdefault(user, set()).add(item)
        return cls(rated, items[np.lexsort((items, -counts))].tolist())


def recommend(
    model: CoVisits, last: dict[int, deque[int]], train: Ratings | Known, users: Iterable[int]
) -> dict[int, list[int]]:
    """Each user's top `K`: co-visited first, then the most rated, what they rated left out."""
    known = train if isinstance(train, Known) else Known.of(train)
    out = {}
    for user in users:
        seen = known.rated.get(user, set())
        found = model.scores(last.get(user, ()))[0].tolist()
        top = [i for i in found if i not in seen][:K]
        for i in known.popular:
            if len(top) == K:
                break
            if i not in seen and i not in top:
                top.append(i)
        out[user] = top
    return out


def tune(replayed: Ratings, split: Split = leave_last_out) -> tuple[CoVisitConfig, list[Tried]]:
    """The combination of `GRID` with the best validation NDCG@10 (ties: the first tried),
    and every combination's figures. `replayed` is what the replay streams (the test items
    already held out); `split` holds out its validation targets the same way."""
    train, held = split(replayed)
    users, known = sorted(held), Known.of(train)
    tried = []
    base = CoVisitConfig()
    for gap_decay in GRID["gap_decay"]:
        model, last = covisits(train, replace(base, gap_decay=gap_decay))
        for popularity, query_decay in itertools.product(GRID["popularity"], GRID["query_decay"]):
            model.config = replace(
                base, gap_decay=gap_decay, popularity=popularity, query_decay=query_decay
            )
            figures = hit_rate_and_ndcg(recommend(model, last, known, users), held, K)
            tried.append(Tried(model.config, figures["hr_at_10"], figures["ndcg_at_10"]))
    best = max(tried, key=lambda t: t.ndcg_at_10)  # (max keeps the first of equals)
    return best.config, tried


def covisit_settings(config: CoVisitConfig) -> dict[str, float]:
    """The settings (`Settings.covisit_*`) that give `config`."""
    return {f"covisit_{k}": v for k, v in asdict(config).items() if k != "max_neighbours"}
