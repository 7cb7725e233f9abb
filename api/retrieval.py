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
from itertools import chain, islice

import numpy as np
import numpy.typing as npt

from api.state import ServingState, UserState
from models.embeddings import Vector

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


@dataclass
class Retrieved:
    """The candidates as parallel columns (item, source, vector score), and what each source
    proposed and each filter dropped."""

    ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    ann: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    per_source: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)


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
            return self._ann(state.taste(list(user.positives)[-SHORT_TERM:]), over // 5)
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
            # the filter that drops each item (None: it may be shown), in one pass
            reasons = [
                "deleted"
                if it is None
                else "seen"
                if i in seen
                else "blocked_creator"
                if it.creator_id in blocked
                else "not_interested"
                if i in hidden
                else None
                for i, it in zip(new, map(catalog, new), strict=True)
            ]
            accepted = [k for k, why in enumerate(reasons) if why is None][: want - added]
            # what is looked at ends at the last accepted item (the rest stays for others)
            end = accepted[-1] + 1 if len(accepted) == want - added else len(new)
            taken.update(new[:end])
            ids.extend([new[k] for k in accepted])
            tags.extend([name] * len(accepted))
            added += len(accepted)
            dropped.update(why for why in reasons[:end] if why is not None)
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
