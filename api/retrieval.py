"""Retrieval and filtering: up to `limit` eligible candidates from several sources.

Each source proposes distinct item codes in its own order of preference. A first round takes each
source's quota (so a user with a strong vector still sees what is trending, new uploads
and their followed creators), a second round fills up from the user's long-term vector,
and the catalog itself (by trending score, then by code) is the last resort, so a catalog
of at least `limit` eligible items always yields exactly `limit` candidates. Candidates
are deduplicated across sources; the first source to propose an item keeps it, and its
tag says where it came from.

Filtering happens as candidates are taken: an item already shown to the user (30 days), by
a blocked creator, marked not interested, or no longer in the catalog (deleted) is dropped
and counted by reason. Everything is numpy over item codes: a source's proposals are looked
at in chunks, each chunk filtered with a handful of vector operations.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from api.item_columns import ItemColumns
from api.state import EMPTY, ServingState, UserState, as_codes
from swipeloop.arrays import Codes, Floats, Vector

log = logging.getLogger(__name__)

# (source, share of `limit` it may fill in the first round)
QUOTAS: tuple[tuple[str, float], ...] = (
    ("covisit", 0.05),
    ("ann_short", 0.10),
    ("similar", 0.05),
    ("followed", 0.03),
    ("trending", 0.05),
    ("fresh", 0.03),
    ("ann", 1.0),
)
FILL = ("ann", "trending", "fresh", "catalog")  # second round, in order
SOURCES = ("covisit", "ann_short", "similar", "followed", "trending", "fresh", "ann", "catalog")
SOURCE = {name: k for k, name in enumerate(SOURCES)}
# what each source is to the ranker (`models.features.ranking.ranking_matrix`'s from_* columns; a
# co-visited item's score is a feature of its own, whatever found it)
RANKER_SOURCE = np.array(
    ["covisit", "ann", "ann", "followed", "trending", "fresh", "ann", "catalog"]
)
SHORT_TERM = 5  # last positives that make the short-term vector
# Why a candidate is dropped, by code; a code's first matching reason in this order counts.
REASONS = ("", "deleted", "seen", "blocked_creator", "not_interested")
OK, DELETED, SEEN, BLOCKED, NOT_INTERESTED = range(len(REASONS))
NO_SCORES: Floats = np.zeros(0, dtype=np.float64)


@dataclass
class Retrieved:
    """The candidates as parallel columns (item code, source code), and what each source
    proposed and each filter dropped."""

    codes: Codes = field(default_factory=lambda: EMPTY)
    sources: npt.NDArray[np.int64] = field(default_factory=lambda: EMPTY)
    ann: Floats = field(default_factory=lambda: NO_SCORES)  # the vector search's (NaN: none)
    queries: list[Vector] = field(default_factory=list)  # the user's long- and short-term
    covisited: tuple[Codes, Floats] = (EMPTY, NO_SCORES)  # items co-visited, their scores
    per_source: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    filter_s: float = 0.0  # of the retrieval's time, what filtering and deduplication took


class Scratch(threading.local):
    """Arrays over all item codes, one set per thread, reused by every request it serves:
    allocating megabytes per request costs page faults, and freeing them unmaps memory under
    the other threads' feet. A request leaves them zeroed as it found them."""

    def __init__(self) -> None:
        self.why = np.zeros(0, dtype=np.int8)  # SEEN or NOT_INTERESTED by code
        self.taken = np.zeros(0, dtype=np.bool_)  # looked at by a source in this request

    def fit(self, size: int) -> None:
        if len(self.why) < size:
            self.why = np.zeros(2 * size, dtype=np.int8)
            self.taken = np.zeros(2 * size, dtype=np.bool_)


SCRATCH = Scratch()


class Filters:
    """What one user may not be shown: the reason code of each item they saw or hid (one
    gather per chunk of proposals), and their blocked creators. A context manager: the
    marks are taken back on exit."""

    def __init__(self, user: UserState, columns: ItemColumns, why: npt.NDArray[np.int8]) -> None:
        self._columns, self._why = columns, why
        hidden, seen = as_codes(user.hidden_items), as_codes(user.seen)
        self._marked = [hidden[hidden < len(columns)], seen[seen < len(columns)]]
        why[self._marked[0]] = NOT_INTERESTED
        why[self._marked[1]] = SEEN  # after: seen wins over not interested
        self._blocked = as_codes(user.blocked_creators)

    def __enter__(self) -> Filters:
        return self

    def __exit__(self, *_: object) -> None:
        for codes in self._marked:
            self._why[codes] = OK

    def reasons(self, codes: Codes) -> npt.NDArray[np.int8]:
        """Each code's drop reason (an index into REASONS), or OK (0)."""
        why = self._why[codes]
        if len(self._blocked):
            blocked = np.isin(self._columns.creator[codes], self._blocked)
            why[blocked & ((why == OK) | (why > BLOCKED))] = BLOCKED
        why[~self._columns.alive[codes]] = DELETED
        return why


class Sources:
    """Each source's proposals for one request, computed on first use."""

    def __init__(self, state: ServingState, user: UserState, limit: int) -> None:
        self._state, self._user, self._limit = state, user, limit
        self.long_term = state.user_vector(user)
        self.short_term = state.taste(as_codes(user.positives)[-SHORT_TERM:])
        self.covisited = state.covisits.scores(user.watched)

    def _ann(self, query: Vector | None, k: int) -> tuple[Codes, Floats]:
        """The k nearest items and their scores (none if the index fails: the other sources
        still serve)."""
        if query is None:
            return EMPTY, NO_SCORES
        try:
            codes, scores = self._state.index.search_codes(query, k)
        except Exception:
            log.exception("vector search failed; serving the other sources")
            return EMPTY, NO_SCORES
        return codes, scores.astype(np.float64)

    def scored(self, source: str, wanted: int) -> tuple[Codes, Floats | None]:
        """A source's proposals, with their vector scores for the ANN sources; `wanted` is
        how many candidates are still missing when it is first asked."""
        state, user = self._state, self._user
        over = self._limit + len(user.seen)  # what the seen filter may take out
        if source == "covisit":
            return self.covisited[0], None
        if source == "ann":  # (the last source of the first round: fills up the rest)
            return self._ann(self.long_term, wanted + len(user.seen))
        if source == "ann_short":
            return self._ann(self.short_term, over // 5)
        if source == "similar":
            last = user.positives[-1] if user.positives else None
            return self._ann(state.vector(last) if last is not None else None, over // 10)
        if source == "followed":
            return state.by_creators(user.followed), None
        if source == "trending":
            return state.trending()[:over], None
        if source == "fresh":
            return state.fresh_pool(), None
        if source == "catalog":
            return state.catalog_order(), None
        raise ValueError(f"unknown source {source!r}")


def retrieve(state: ServingState, user: UserState, limit: int) -> Retrieved:
    """Up to `limit` eligible candidates, each tagged with the source that found it."""
    columns = state.columns  # one consistent set of columns for the whole request
    SCRATCH.fit(len(columns))
    taken = SCRATCH.taken
    looked: list[Codes] = []  # what `taken` marks, to unmark at the end
    try:
        with Filters(user, columns, SCRATCH.why) as filters:
            return _retrieve(state, user, limit, columns, filters, taken, looked)
    finally:
        for codes in looked:
            taken[codes] = False


def _retrieve(
    state: ServingState,
    user: UserState,
    limit: int,
    columns: ItemColumns,
    filters: Filters,
    taken: npt.NDArray[np.bool_],
    looked: list[Codes],
) -> Retrieved:
    sources = Sources(state, user, limit)
    proposals: dict[str, tuple[Codes, Floats | None]] = {}
    position: Counter[str] = Counter()  # how far each source's proposals were looked at
    picked: list[Codes] = []  # accepted codes, a block per take
    picked_scores: list[Floats] = []
    block_source: list[int] = []
    dropped = np.zeros(len(REASONS), dtype=np.int64)  # by reason code
    per_source: Counter[str] = Counter()
    total = 0
    filter_s = 0.0

    def take(name: str, quota: int) -> None:
        """Up to `quota` more candidates from one source, a chunk of proposals at a time."""
        nonlocal total, dropped, filter_s
        want = min(quota, limit - total)
        if want <= 0:
            return
        if name not in proposals:
            proposals[name] = sources.scored(name, want)
        mine, scores = proposals[name]
        while want > 0 and position[name] < len(mine):
            started = time.perf_counter()
            start = position[name]
            chunk = mine[start : start + 2 * want + 16]
            # neither looked at by a source yet, nor newer than this request's `columns`
            inside = chunk < len(columns)
            fresh = np.flatnonzero(~taken[np.where(inside, chunk, 0)] & inside)  # positions
            codes = chunk[fresh]
            why = filters.reasons(codes)
            ok = np.flatnonzero(why == OK)
            if len(ok) >= want:  # what is looked at ends at the last accepted code
                end = int(ok[want - 1]) + 1
                ok = ok[:want]
                position[name] = start + int(fresh[end - 1]) + 1
            else:
                end = len(codes)
                position[name] = start + len(chunk)
            taken[codes[:end]] = True
            looked.append(codes[:end])
            dropped += np.bincount(why[:end], minlength=len(REASONS))
            picked.append(codes[ok])
            picked_scores.append(
                scores[start + fresh[ok]] if scores is not None else np.full(len(ok), np.nan)
            )
            block_source.append(SOURCE[name])
            per_source[name] += len(ok)
            total += len(ok)
            want -= len(ok)
            filter_s += time.perf_counter() - started

    for name, share in QUOTAS:
        take(name, max(1, int(share * limit)))
    for name in FILL:
        take(name, limit)
    return Retrieved(
        codes=np.concatenate(picked) if picked else EMPTY,
        ann=np.concatenate(picked_scores) if picked else NO_SCORES,
        sources=np.repeat(np.array(block_source, dtype=np.int64), [len(block) for block in picked]),
        queries=[q for q in (sources.long_term, sources.short_term) if q is not None],
        covisited=sources.covisited,
        per_source=Counter({k: v for k, v in per_source.items() if v}),
        dropped=Counter({REASONS[k]: int(n) for k, n in enumerate(dropped) if k and n}),
        filter_s=filter_s,
    )


def eligible(state: ServingState, user: UserState, proposals: Codes, n: int) -> Codes:
    """The first `n` of `proposals` (distinct codes) that pass the feed's filters, in order."""
    columns = state.columns
    SCRATCH.fit(len(columns))
    out: list[Codes] = []
    found = 0
    with Filters(user, columns, SCRATCH.why) as filters:
        for start in range(0, len(proposals), 4 * n + 64):
            chunk = proposals[start : start + 4 * n + 64]
            chunk = chunk[chunk < len(columns)]
            ok = chunk[filters.reasons(chunk) == OK][: n - found]
            out.append(ok)
            found += len(ok)
            if found == n:
                break
    return np.concatenate(out) if out else EMPTY
