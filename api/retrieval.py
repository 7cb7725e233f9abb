"""Retrieval and filtering: up to `limit` eligible candidates from several sources.

Each source proposes item ids in its own order of preference. A first round takes each
source's quota (so a user with a strong vector still sees what is trending, new uploads
and their followed creators), a second round fills up from the user's long-term vector,
and the catalog itself (by trending score, then newest) is the last resort, so a catalog
of at least `limit` eligible items always yields exactly `limit` candidates. Candidates
are deduplicated across sources; the first source to propose an item keeps it, and its
tag says where it came from.

Filtering happens as candidates are taken: an item already shown to the user (30 days), by
a blocked creator, marked not interested, or no longer in the catalog (deleted) is dropped
and counted by reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from api.state import ServingState, UserState
from models.embeddings import Vector, mean_vector

# (source, share of `limit` it may fill in the first round)
QUOTAS: tuple[tuple[str, float], ...] = (
    ("ann_short", 0.10),
    ("similar", 0.05),
    ("followed", 0.03),
    ("trending", 0.05),
    ("fresh", 0.03),
    ("ann", 1.0),
)
FILL = ("ann", "trending", "fresh", "catalog")  # second round, in order
SHORT_TERM = 5  # last positives that make the short-term vector
ANN_SOURCES = frozenset({"ann", "ann_short", "similar"})


@dataclass
class Candidate:
    """A retrieved item with the source that found it and its retrieval score."""

    item_id: str
    source: str
    ann_score: float = 0.0
    prerank: float = 0.0
    propensity: float = 1.0  # chance it was chosen for its slot (exploration slots < 1)


@dataclass
class Retrieved:
    """The candidates, and what each source proposed and each filter dropped."""

    candidates: list[Candidate]
    per_source: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)


def why_dropped(state: ServingState, user: UserState, item_id: str) -> str | None:
    """The filter that drops an item for this user, or None if it may be shown."""
    item = state.catalog.get(item_id)
    if item is None:
        return "deleted"
    if item_id in user.seen:
        return "seen"
    if item.creator_id in user.blocked_creators:
        return "blocked_creator"
    if item_id in user.hidden_items:
        return "not_interested"
    return None


def short_term_vector(state: ServingState, user: UserState) -> Vector | None:
    """The mean of the user's last few positives' vectors (this morning's taste)."""
    recent = list(user.positives)[-SHORT_TERM:]
    mean = mean_vector([state.vectors[i] for i in recent if i in state.vectors])
    if mean is not None:
        mean[-1] = 1.0  # the bias coordinate, as in every learned user vector
    return mean


class Sources:
    """Each source's proposals for one request, computed on first use."""

    def __init__(self, state: ServingState, user: UserState, limit: int) -> None:
        self._state, self._user, self._limit = state, user, limit
        self.scores: dict[str, float] = {}  # item -> its best vector score among ANN sources

    def _ann(self, query: Vector | None, k: int) -> Iterator[str]:
        if query is None:
            return
        ids, scores = self._state.index.search(query, k)
        for item_id, score in zip(ids, scores.tolist(), strict=True):
            if score > self.scores.get(item_id, -np.inf):
                self.scores[item_id] = score
            yield item_id

    def proposals(self, source: str) -> Iterable[str]:
        state, user, limit = self._state, self._user, self._limit
        over = limit + len(user.seen)  # what the seen filter may take out
        if source == "ann":
            return self._ann(state.user_vector(user), over)
        if source == "ann_short":
            return self._ann(short_term_vector(state, user), over // 5)
        if source == "similar":
            last = user.positives[-1] if user.positives else None
            return self._ann(state.vectors.get(last) if last else None, over // 10)
        if source == "followed":
            return state.by_creators(user.followed)
        if source == "trending":
            return state.trending(over)
        if source == "fresh":
            return state.fresh_pool()
        if source == "catalog":
            return state.catalog_order()
        raise ValueError(f"unknown source {source!r}")


def retrieve(state: ServingState, user: UserState, limit: int) -> Retrieved:
    """Up to `limit` eligible candidates, each tagged with the source that found it."""
    sources = Sources(state, user, limit)
    out = Retrieved([])
    taken: set[str] = set()
    iterators = {name: iter(sources.proposals(name)) for name, _ in QUOTAS}

    def take(name: str, quota: int) -> None:
        proposals = iterators.setdefault(name, iter(sources.proposals(name)))
        added = 0
        while added < quota and len(out.candidates) < limit:
            item_id = next(proposals, None)
            if item_id is None:
                return
            if item_id in taken:
                continue
            taken.add(item_id)
            reason = why_dropped(state, user, item_id)
            if reason is not None:
                out.dropped[reason] += 1
                continue
            score = sources.scores.get(item_id, 0.0)
            out.candidates.append(Candidate(item_id, name, score))
            out.per_source[name] += 1
            added += 1

    for name, share in QUOTAS:
        take(name, max(1, int(share * limit)))
    for name in FILL:
        take(name, limit)
    for c in out.candidates:  # a vector score for candidates found by other sources too
        c.ann_score = sources.scores.get(c.item_id, c.ann_score)
    return out
