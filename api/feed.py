"""GET /v1/feed, stage by stage: retrieve → filter → pre-rank → rank → diversify → log.

retrieve+filter  up to `candidates` (10,000) eligible items from several sources
                 (api.retrieval), every drop counted by reason
prerank          one cheap score for all of them: vector score + co-visitation with the
                 user's last watched videos + trending prior, minus a push-down for creators
                 the user said "not interested" to; keep `rank_slice`
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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import msgspec
import numpy as np
import numpy.typing as npt

from api.diversity import Slot, arrange
from api.index import VectorIndex
from api.item_columns import ItemColumns
from api.ivf import best
from api.retrieval import RANKER_SOURCE, SOURCES, Retrieved, retrieve
from api.state import ServingState, as_codes
from models.affinity import prior as affinity_prior
from models.covisit import lookup
from models.features.ranking import FEATURE_NAMES, ranking_matrix
from swipeloop.arrays import Codes, Floats, Vector
from swipeloop.contracts import Explain, Feed, FeedItem, Impression, ItemExplain, Network
from swipeloop.metrics import FEED_CANDIDATES, FEED_DROPS, FEED_STAGE_SECONDS
from training.ranker import Ranker

log = logging.getLogger(__name__)
NO_MODEL = "none"
NOT_INTERESTED_PUSH = 1.0  # pre-rank penalty for a creator the user hid an item of
TRENDING_PRIOR = 0.1  # weight of the trending score in the pre-rank
AFFINITY_WEIGHT = 1.0  # weight of the tag and creator affinity (-1 to 1) in the pre-rank
MOMENTUM_WEIGHT = 2.0  # weight of the tag's momentum (mean swipe weight now less usual)
TOP_CONTRIBUTIONS = 5
DIVERSIFY_HEAD = 5  # ranked items per slot the diversity rules choose from
STAGES = ("retrieve", "filter", "prerank", "rank", "diversify")


@dataclass
class Timer:
    """Milliseconds per stage of one request."""

    stages: dict[str, float] = field(default_factory=dict)
    _at: float = field(default_factory=time.perf_counter)

    def lap(self, stage: str, *, within: tuple[str, float] | None = None) -> None:
        """The time since the last lap is `stage`'s, less `within` = (part, seconds): a part
        of it that ran interleaved with it, reported apart."""
        now = time.perf_counter()
        spent = {stage: now - self._at}
        if within is not None:
            part, seconds = within
            spent = {stage: now - self._at - seconds, part: seconds}
        for name, seconds in spent.items():
            self.stages[name] = round(seconds * 1000, 3)
            FEED_STAGE_SECONDS.labels(name).observe(seconds)
        self._at = now


@dataclass
class Picked:
    """One served item: its code, its row in the shortlist, and how it got its place."""

    code: int
    row: int
    source: str
    propensity: float
    score: float
    prerank: float


def vector_scores(index: VectorIndex, queries: list[Vector], codes: Codes) -> Floats:
    """Each item's best inner product with the user's vectors (0 without a user vector, or
    for an item without one)."""
    if not queries or not len(codes):
        return np.zeros(len(codes), dtype=np.float64)
    scores = index.vectors(codes) @ np.stack(queries).T
    return np.asarray(scores.max(axis=1), dtype=np.float64)


def prerank(
    columns: ItemColumns,
    trending: Floats,
    codes: Codes,
    ann: Floats,
    covisit: Floats,
    affinity: Floats,
    momentum: Floats,
    pushed_down: Codes,
    covisit_weight: float,
) -> Floats:
    """A cheap score over every candidate: vector score + co-visitation + the user's tag and
    creator affinity (`models.affinity.prior`) + its tag's momentum + trending prior, minus
    a push-down for creators the user hid an item of."""
    prior = np.zeros(len(codes), dtype=np.float64)
    known = codes < len(trending)  # items newer than the last trending table score 0
    prior[known] = trending[codes[known]]
    scores = ann + covisit_weight * covisit + AFFINITY_WEIGHT * affinity + TRENDING_PRIOR * prior
    scores += MOMENTUM_WEIGHT * momentum
    if len(pushed_down):
        scores -= NOT_INTERESTED_PUSH * np.isin(columns.creator[codes], pushed_down)
    return scores


def build_feed(
    state: ServingState,
    ranker: Ranker | None,
    user_id: str,
    n: int,
    explain: bool = False,
    rng: random.Random | None = None,
    *,
    covisit_weight: float | None = None,
    mark_seen: bool = True,
    network: Network | None = None,
) -> tuple[Feed, list[Impression], dict[str, float]]:
    """A ranked page for one user, the impressions to log for it, and ms per stage.
    `covisit_weight` overrides the setting; `mark_seen=False` leaves the page unseen (a
    what-if: the replay's validation); `network` is the phone's now (default: the last one
    its events reported)."""
    timer = Timer()
    now = datetime.fromtimestamp(state.now_s(), UTC)
    user = state.user(user_id)
    retrieved = retrieve(state, user, state.settings.candidates)
    columns = state.columns
    for source, count in retrieved.per_source.items():
        FEED_CANDIDATES.labels(source).inc(count)
    for reason, count in retrieved.dropped.items():
        FEED_DROPS.labels(reason).inc(count)
    timer.lap("retrieve", within=("filter", retrieved.filter_s))

    codes = retrieved.codes
    # the score of the vector search that found a candidate; the others' computed here
    ann = retrieved.ann.copy()
    missing = np.isnan(ann)
    ann[missing] = vector_scores(state.index, retrieved.queries, codes[missing])
    hidden = as_codes(user.hidden_items)
    pushed_down = np.unique(columns.creator[hidden[hidden < len(columns)]])
    covisit = lookup(codes, *retrieved.covisited)
    tags = user.tag_affinity.lookup(columns.tag[codes], now.timestamp())
    creators = user.creator_affinity.lookup(columns.creator[codes], now.timestamp())
    liked = affinity_prior(tags, creators)
    momentum = state.momentum.lookup(columns.tag[codes], now.timestamp())
    weight = state.settings.covisit_weight if covisit_weight is None else covisit_weight
    scores = prerank(
        columns, state.trending_scores(), codes, ann, covisit, liked, momentum, pushed_down, weight
    )
    short = best(scores, state.settings.rank_slice)  # positions in `retrieved`
    timer.lap("prerank")

    listed = codes[short]
    rows = ranking_matrix(
        columns.counts[listed],
        columns.as_of_s[listed],
        columns.created_s[listed],
        columns.duration_ms[listed],
        ann[short],
        RANKER_SOURCE[retrieved.sources[short]],
        now.timestamp(),
        covisit[short],
        tags[short],
        creators[short],
        momentum[short],
        state.context.rates(
            network or user.network, columns.duration_ms[listed].astype(np.float64)
        ),
    ).astype(np.float32)
    model, version = _rank(ranker, rows, scores[short])
    order = np.argsort(-model, kind="stable")  # rows, best first
    timer.lap("rank")

    ranked = listed[order]
    slots = diversify(state, columns, ranked, n, rng)
    timer.lap("diversify")

    picked = [
        Picked(
            code=int(ranked[slot.index]),
            row=(row := int(order[slot.index])),
            source="explore" if slot.explore else SOURCES[retrieved.sources[short[row]]],
            propensity=slot.propensity,
            score=float(model[row]),
            prerank=float(scores[short[row]]),
        )
        for slot in slots
    ]
    feed, impressions = page(state, user_id, picked, rows, version, now, len(codes), mark_seen)
    if explain:
        item_ids = [i.item_id for i in feed.items]
        feed = msgspec.structs.replace(
            feed, explain=_explain(ranker, rows, picked, item_ids, retrieved, timer)
        )
    return feed, impressions, timer.stages


def page(
    state: ServingState,
    user_id: str,
    picked: list[Picked],
    rows: npt.NDArray[np.float32],
    version: str,
    now: datetime,
    candidates: int,
    mark_seen: bool = True,
) -> tuple[Feed, list[Impression]]:
    """The response for the picked items, and one impression each with its feature row;
    they are now seen by this user."""
    user = state.user(user_id)
    at = np.array([p.code for p in picked], dtype=np.int64)
    item_ids = state.items.names(at)
    creator_ids = state.creators.names(state.columns.creator[at])
    request_id = uuid.uuid4().hex
    items, impressions = [], []
    for position, (p, item_id, creator_id) in enumerate(
        zip(picked, item_ids, creator_ids, strict=True)
    ):
        items.append(
            FeedItem(
                item_id=item_id,
                creator_id=creator_id,
                position=position,
                source=p.source,
                score=p.score,
                propensity=p.propensity,
            )
        )
        impressions.append(
            Impression(
                request_id=request_id,
                user_id=user_id,
                item_id=item_id,
                position=position,
                source=p.source,
                model_version=version,
                score=p.score,
                prerank=p.prerank,
                propensity=p.propensity,
                features=rows[p.row].tolist(),
                served_at=now,
            )
        )
        if mark_seen:
            user.seen.add(p.code)
    feed = Feed(
        request_id=request_id,
        user_id=user_id,
        model_version=version,
        candidates=candidates,
        items=items,
    )
    return feed, impressions


def diversify(
    state: ServingState,
    columns: ItemColumns,
    ranked: Codes,
    n: int,
    rng: random.Random | None,
) -> list[Slot]:
    """`api.diversity.arrange` over the head of the ranked list (`DIVERSIFY_HEAD` per slot)
    and every fresh-pool item in it (exploration draws from the best placed of them); the
    whole list only when the head cannot fill the page under the creator rule, so the result
    is the same. Slot indices are into `ranked`."""
    ranks = state.fresh_ranks(ranked)
    head = min(len(ranked), DIVERSIFY_HEAD * n)
    for keep in (np.union1d(np.arange(head), np.flatnonzero(ranks >= 0)), None):
        rows, placed = (ranked, ranks) if keep is None else (ranked[keep], ranks[keep])
        fresh = np.flatnonzero(placed >= 0)
        slots = arrange(
            columns.creator[rows].tolist(),
            [tag if tag >= 0 else None for tag in columns.tag[rows].tolist()],
            n,
            pool=fresh[np.argsort(placed[fresh], kind="stable")].tolist(),
            explore_every=state.settings.explore_every,
            rng=rng,
        )
        if keep is None or (
            len(slots) == min(n, len(ranked))
            and all(s.explore or keep[s.index] < head for s in slots)
        ):
            break  # (the head filled the page: the whole list would have given the same)
    if keep is None:
        return slots
    return [replace(s, index=int(keep[s.index])) for s in slots]


def _rank(
    ranker: Ranker | None, rows: npt.NDArray[np.float32], prerank: Floats
) -> tuple[Floats, str]:
    """The model's scores, or the pre-rank scores when there is no model (or it fails)."""
    if ranker is not None and len(rows):
        try:
            return ranker.predict(rows), ranker.version
        except Exception:  # a broken model must not break feeds: fall back, loudly
            log.exception("model %s failed to score; serving the pre-rank order", ranker.version)
    return prerank, NO_MODEL


def _explain(
    ranker: Ranker | None,
    rows: npt.NDArray[np.float32],
    picked: list[Picked],
    item_ids: list[str],
    retrieved: Retrieved,
    timer: Timer,
) -> Explain:
    """Per stage: candidates per source, drops per reason, milliseconds; per item: its scores
    and top feature contributions."""
    contributions: Floats | None = None
    if ranker is not None and picked:
        contributions = ranker.contributions(rows[[p.row for p in picked]])
    items = []
    for k, (p, item_id) in enumerate(zip(picked, item_ids, strict=True)):
        top: dict[str, float] = {}
        if contributions is not None:
            row = contributions[k, : len(FEATURE_NAMES)]
            for j in np.argsort(-np.abs(row))[:TOP_CONTRIBUTIONS]:
                top[FEATURE_NAMES[int(j)]] = round(float(row[j]), 5)
        items.append(
            ItemExplain(
                item_id=item_id,
                source=p.source,
                prerank=round(p.prerank, 5),
                score=round(p.score, 5),
                propensity=p.propensity,
                contributions=top,
            )
        )
    return Explain(
        candidates_per_source=dict(retrieved.per_source),
        dropped=dict(retrieved.dropped),
        stage_ms=dict(timer.stages),
        shortlist=len(rows),
        items=items,
    )
