"""GET /v1/feed, stage by stage: retrieve → filter → pre-rank → rank → diversify → log.

retrieve+filter  up to `candidates` (10,000) eligible items from several sources
                 (api.retrieval), every drop counted by reason
prerank          one cheap score for all of them: vector score + trending prior, minus a
                 push-down for creators the user said "not interested" to; keep `rank_slice`
rank             the LightGBM model on the shortlist, features from in-memory caches only
diversify        ≤ 2 per creator in any 10, genres shuffled, 1 slot in 10 explores the
                 fresh pool (api.diversity)
log              one impression per item with both scores, the propensity and the exact
                 feature row (produced without waiting, by the route)

Fallbacks: no model, or a model that fails to score → pre-rank order; a user without a
vector → trending, fresh and the catalog; the index not ready → the same.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat

import numpy as np
import numpy.typing as npt

from api.diversity import arrange
from api.retrieval import ANN_SOURCES, Candidate, Retrieved, retrieve
from api.state import ServingState
from models.features import FEATURE_NAMES, ranking_features
from models.ranker import Ranker
from swipeloop.contracts import Explain, Feed, FeedItem, Impression, ItemExplain
from swipeloop.metrics import FEED_CANDIDATES, FEED_DROPS, FEED_STAGE_SECONDS

log = logging.getLogger(__name__)
NO_MODEL = "none"
NOT_INTERESTED_PUSH = 1.0  # pre-rank penalty for a creator the user hid an item of
TOP_CONTRIBUTIONS = 5
STAGES = ("retrieve", "prerank", "rank", "diversify")


@dataclass
class Timer:
    """Milliseconds per stage of one request."""

    stages: dict[str, float] = field(default_factory=dict)
    _at: float = field(default_factory=time.perf_counter)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = round((now - self._at) * 1000, 3)
        FEED_STAGE_SECONDS.labels(stage).observe(now - self._at)
        self._at = now


def prerank(
    state: ServingState, retrieved: Retrieved, keep: int, pushed_down: set[str]
) -> list[Candidate]:
    """A cheap score over every candidate, in numpy (vector score + trending prior, minus a
    push-down for creators the user hid an item of); the best `keep` as candidates."""
    ids = retrieved.ids
    prior = state.trending_scores()
    scores = retrieved.ann + 0.1 * np.fromiter(
        map(prior.get, ids, repeat(0.0)), np.float64, len(ids)
    )
    if pushed_down:
        catalog = state.catalog
        hit = np.fromiter((catalog[i].creator_id in pushed_down for i in ids), bool, len(ids))
        scores -= NOT_INTERESTED_PUSH * hit
    top = np.argpartition(-scores, keep)[:keep] if len(ids) > keep else np.arange(len(ids))
    best = top[np.argsort(-scores[top], kind="stable")].tolist()
    return [
        Candidate(ids[i], retrieved.sources[i], float(retrieved.ann[i]), float(scores[i]))
        for i in best
    ]


def build_feed(
    state: ServingState,
    ranker: Ranker | None,
    user_id: str,
    n: int,
    explain: bool = False,
    rng: random.Random | None = None,
) -> tuple[Feed, list[Impression], dict[str, float]]:
    """A ranked page for one user, the impressions to log for it, and ms per stage."""
    timer = Timer()
    now = datetime.now(UTC)
    user = state.user(user_id)
    retrieved = retrieve(state, user, state.settings.candidates)
    for source, count in retrieved.per_source.items():
        FEED_CANDIDATES.labels(source).inc(count)
    for reason, count in retrieved.dropped.items():
        FEED_DROPS.labels(reason).inc(count)
    timer.lap("retrieve")

    pushed_down = {
        state.catalog[i].creator_id for i in list(user.hidden_items) if i in state.catalog
    }
    shortlist = prerank(state, retrieved, state.settings.rank_slice, pushed_down)
    timer.lap("prerank")

    rows = np.asarray(
        [
            ranking_features(
                state.catalog[c.item_id],
                state.features.get(c.item_id),
                c.ann_score,
                "ann" if c.source in ANN_SOURCES else c.source,
                now,
            )
            for c in shortlist
        ],
        dtype=np.float32,
    ).reshape(len(shortlist), len(FEATURE_NAMES))
    scores, version = _rank(ranker, shortlist, rows)
    order = np.argsort(-scores, kind="stable")
    timer.lap("rank")

    ranked = [shortlist[int(i)] for i in order]
    pool_ids = set(state.fresh_pool())
    slots = arrange(
        [state.catalog[c.item_id].creator_id for c in ranked],
        [_first_tag(state, c.item_id) for c in ranked],
        n,
        pool=[k for k, c in enumerate(ranked) if c.item_id in pool_ids],
        explore_every=state.settings.explore_every,
        rng=rng,
    )
    timer.lap("diversify")

    request_id = uuid.uuid4().hex
    items, impressions, picked = [], [], []
    for position, slot in enumerate(slots):
        c = ranked[slot.index]
        i = int(order[slot.index])
        source = "explore" if slot.explore else c.source
        score = float(scores[i])
        picked.append((c, i, source, slot.propensity, score))
        items.append(
            FeedItem(
                item_id=c.item_id,
                creator_id=state.catalog[c.item_id].creator_id,
                position=position,
                source=source,
                score=score,
                propensity=slot.propensity,
            )
        )
        impressions.append(
            Impression(
                request_id=request_id,
                user_id=user_id,
                item_id=c.item_id,
                position=position,
                source=source,
                model_version=version,
                score=score,
                prerank=c.prerank,
                propensity=slot.propensity,
                features=[float(x) for x in rows[i]],
                served_at=now,
            )
        )
        user.seen.add(c.item_id)
    feed = Feed(
        request_id=request_id,
        user_id=user_id,
        model_version=version,
        candidates=len(retrieved.ids),
        items=items,
        explain=_explain(ranker, rows, picked, retrieved.per_source, retrieved.dropped, timer)
        if explain
        else None,
    )
    return feed, impressions, timer.stages


def _rank(
    ranker: Ranker | None, shortlist: list[Candidate], rows: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float64], str]:
    """The model's scores, or the pre-rank scores when there is no model (or it fails)."""
    if ranker is not None and len(shortlist):
        try:
            return ranker.predict(rows), ranker.version
        except Exception:  # a broken model must not break feeds: fall back, loudly
            log.exception("model %s failed to score; serving the pre-rank order", ranker.version)
    return np.asarray([c.prerank for c in shortlist], dtype=np.float64), NO_MODEL


def _first_tag(state: ServingState, item_id: str) -> str | None:
    tags = state.catalog[item_id].tags
    return tags[0] if tags else None


def _explain(
    ranker: Ranker | None,
    rows: npt.NDArray[np.float32],
    picked: list[tuple[Candidate, int, str, float, float]],
    per_source: Counter[str],
    dropped: Counter[str],
    timer: Timer,
) -> Explain:
    """Per stage: candidates per source, drops per reason, milliseconds; per item: its scores
    and top feature contributions."""
    contributions: npt.NDArray[np.float64] | None = None
    if ranker is not None and picked:
        at = [i for _, i, _, _, _ in picked]
        contributions = ranker.contributions(rows[at])
    items = []
    for k, (c, _i, source, propensity, score) in enumerate(picked):
        top: dict[str, float] = {}
        if contributions is not None:
            row = contributions[k, : len(FEATURE_NAMES)]
            for j in np.argsort(-np.abs(row))[:TOP_CONTRIBUTIONS]:
                top[FEATURE_NAMES[int(j)]] = round(float(row[j]), 5)
        items.append(
            ItemExplain(
                item_id=c.item_id,
                source=source,
                prerank=round(c.prerank, 5),
                score=round(score, 5),
                propensity=propensity,
                contributions=top,
            )
        )
    return Explain(
        candidates_per_source=dict(per_source),
        dropped=dict(dropped),
        stage_ms=dict(timer.stages),
        shortlist=len(rows),
        items=items,
    )
