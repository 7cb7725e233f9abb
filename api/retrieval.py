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
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain, compress, islice

import numpy as np
import numpy.typing as npt

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
    """The candidates as parallel columns (item, source, vector score), and what each source
    proposed and each filter dropped."""

    ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    ann: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
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


def _reasons(
    state: ServingState, user: UserState, looked: list[str], ok: list[bool]
) -> Counter[str]:
    """Why the items not taken were dropped."""
    return Counter(
        why_dropped(state, user, item_id) or "?"
        for item_id, fine in zip(looked, ok, strict=True)
        if not fine
    )


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

    def _ann(self, query: Vector | None, k: int) -> list[str]:
        """The k nearest items; their scores are kept (the long-term vector's, searched
        last, win over the others')."""
        if query is None:
            return []
        ids, scores = self._state.index.search(query, k)
        self.scores.update(zip(ids, scores.tolist(), strict=True))
        return ids

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
    """Up to `limit` eligible candidates, each tagged with the source that found it.

    The hot loop of a feed (10,000 items): the filters are inlined on purpose, a function
    call per item would double its cost."""
    sources = Sources(state, user, limit)
    out = Retrieved()
    ids, tags, dropped, per_source = out.ids, out.sources, out.dropped, out.per_source
    taken: set[str] = set()
    catalog = state.catalog.get
    seen, hidden, blocked = user.seen, user.hidden_items, user.blocked_creators
    iterators = {name: iter(sources.proposals(name)) for name, _ in QUOTAS}

    def take(name: str, quota: int) -> None:
        """Up to `quota` more candidates from one source, filtered in bulk: list
        comprehensions over a chunk of proposals cost a tenth of a loop body per item."""
        proposals = iterators.setdefault(name, iter(sources.proposals(name)))
        want = min(quota, limit - len(ids))
        added = 0
        while added < want:
            chunk = list(islice(proposals, 2 * (want - added) + 16))
            if not chunk:
                break
            new = [i for i in dict.fromkeys(chunk) if i not in taken]
            items = list(map(catalog, new))
            ok = [
                it is not None
                and i not in seen
                and it.creator_id not in blocked
                and i not in hidden
                for i, it in zip(new, items, strict=True)
            ]
            accepted = list(compress(range(len(new)), ok))[: want - added]
            # what is looked at ends at the last accepted item (the rest stays for others)
            end = accepted[-1] + 1 if len(accepted) == want - added else len(new)
            looked = new[:end]
            taken.update(looked)
            ids.extend([new[i] for i in accepted])
            tags.extend([name] * len(accepted))
            added += len(accepted)
            dropped.update(_reasons(state, user, looked, ok[:end]))
            if end < len(new):  # proposals not looked at stay for this source's next turn
                proposals = iterators[name] = chain(new[end:], proposals)
        per_source[name] += added

    for name, share in QUOTAS:
        take(name, max(1, int(share * limit)))
    for name in FILL:
        take(name, limit)
    score = sources.scores.get
    out.ann = np.fromiter((score(i, 0.0) for i in ids), np.float64, len(ids))
    return out
