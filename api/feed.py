"""GET /v1/feed, stage by stage: retrieve → filter → pre-rank → rank → diversify → log."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from api.state import ServingState, UserState
from models.features import ranking_features, trending_score
from models.ranker import Ranker
from swipeloop.contracts import Feed, FeedItem, Impression

MAX_PER_CREATOR = 2
NO_MODEL = "none"


@dataclass
class Candidate:
    """A retrieved item with the source that found it and its retrieval score."""

    item_id: str
    source: str
    ann_score: float = 0.0
    prerank: float = 0.0


def retrieve(state: ServingState, user: UserState, limit: int) -> list[Candidate]:
    """Up to `limit` eligible candidates: ANN on the user's vector, then trending, then fresh."""
    found: dict[str, Candidate] = {}

    def eligible(item_id: str) -> bool:
        item = state.catalog.get(item_id)
        return (
            item is not None
            and item_id not in found
            and item_id not in user.seen
            and item_id not in user.hidden_items
            and item.creator_id not in user.blocked_creators
        )

    query = state.user_vector(user)
    if query is not None:
        ids, scores = state.index.search(query, limit + len(user.seen))
        for item_id, score in zip(ids, scores, strict=True):
            if len(found) >= limit:
                break
            if eligible(item_id):
                found[item_id] = Candidate(item_id, "ann", float(score))
    for source, ranked in (("trending", state.trending(limit)), ("fresh", state.fresh(limit))):
        for item_id in ranked:
            if len(found) >= limit:
                break
            if eligible(item_id):
                found[item_id] = Candidate(item_id, source)
    return list(found.values())


def prerank(
    state: ServingState, candidates: list[Candidate], keep: int, now: datetime
) -> list[Candidate]:
    """A cheap score over every candidate (similarity + trending prior); keep the best."""
    scores = np.fromiter(
        (
            c.ann_score + 0.1 * trending_score(state.features.get(c.item_id), now)
            for c in candidates
        ),
        dtype=np.float64,
        count=len(candidates),
    )
    top = (
        np.argpartition(-scores, keep)[:keep] if len(candidates) > keep else np.arange(len(scores))
    )
    kept = []
    for i in top[np.argsort(-scores[top], kind="stable")]:
        candidates[int(i)].prerank = float(scores[i])
        kept.append(candidates[int(i)])
    return kept


def build_feed(
    state: ServingState, ranker: Ranker | None, user_id: str, n: int
) -> tuple[Feed, list[Impression]]:
    """A ranked page for one user and the impressions to log for it."""
    now = datetime.now(UTC)
    user = state.user(user_id)
    candidates = retrieve(state, user, state.settings.candidates)
    shortlist = prerank(state, candidates, state.settings.rank_slice, now)
    rows = np.asarray(
        [
            ranking_features(
                state.catalog[c.item_id], state.features.get(c.item_id), c.ann_score, c.source, now
            )
            for c in shortlist
        ],
        dtype=np.float32,
    )
    if ranker is not None and len(shortlist):
        scores = ranker.predict(rows)
        order = np.argsort(-scores, kind="stable")
    else:  # no model yet: keep the pre-rank order
        scores = np.asarray([c.prerank for c in shortlist], dtype=np.float64)
        order = np.arange(len(shortlist))
    version = ranker.version if ranker else NO_MODEL
    request_id = uuid.uuid4().hex
    picked: list[int] = []
    per_creator: Counter[str] = Counter()
    for i in order:
        creator = state.catalog[shortlist[int(i)].item_id].creator_id
        if per_creator[creator] < MAX_PER_CREATOR:
            picked.append(int(i))
            per_creator[creator] += 1
        if len(picked) == n:
            break
    items, impressions = [], []
    for position, i in enumerate(picked):
        c = shortlist[i]
        item = state.catalog[c.item_id]
        items.append(
            FeedItem(
                item_id=c.item_id,
                creator_id=item.creator_id,
                position=position,
                source=c.source,
                score=float(scores[i]),
            )
        )
        impressions.append(
            Impression(
                request_id=request_id,
                user_id=user_id,
                item_id=c.item_id,
                position=position,
                source=c.source,
                model_version=version,
                score=float(scores[i]),
                features=[float(x) for x in rows[i]],
                served_at=now,
            )
        )
        user.seen.add(c.item_id)
    feed = Feed(
        request_id=request_id,
        user_id=user_id,
        model_version=version,
        candidates=len(candidates),
        items=items,
    )
    return feed, impressions
