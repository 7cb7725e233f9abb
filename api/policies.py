"""What the real-time feed is compared against: `GET /v1/feed?policy=…` serves one of these
to any user, so an experiment (the simulator's arms) compares them on one population and
one catalogue.

realtime    the full feed (api.feed.build_feed), the default
batch       what a nightly system serves: the day's most played items and their features as
            they stood at the last snapshot (taken when the production model changes, or
            at the first batch request), ranked by the nightly model; no live feature, no
            vector, no co-visitation, nothing uploaded since the snapshot
popularity  the most played items of the last 24 h, live
random      eligible items drawn uniformly

Every policy filters like the feed (seen, blocked, not interested, deleted), logs its
impressions the same way, with `source` set to its name and the feature row it ranked by
(the live one for popularity and random), and marks what it served as seen.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import numpy.typing as npt

from api.feed import NO_MODEL, Picked, page
from api.retrieval import eligible
from api.state import ServingState
from models.features.ranking import ranking_matrix
from swipeloop.arrays import Codes
from swipeloop.contracts import Feed, Impression
from training.ranker import Ranker

log = logging.getLogger(__name__)
Policy = Literal["realtime", "batch", "popularity", "random"]
POLICIES: tuple[Policy, ...] = ("realtime", "batch", "popularity", "random")
BATCH_CANDIDATES = 2_000  # the day's most played items a batch feed ranks


@dataclass(frozen=True)
class Snapshot:
    """The catalogue as a nightly job saw it: features frozen, the model of that night."""

    taken_s: float
    version: str
    codes: Codes  # the day's most played items at the snapshot, in the nightly model's order
    rows: npt.NDArray[np.float32]  # their ranking rows as of the snapshot, in that order
    row_of: dict[int, int]  # each code's row


class Baselines:
    """What the baseline policies keep between requests: the batch arm's snapshot, retaken
    when the production model changes."""

    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None

    def snapshot(self, state: ServingState, ranker: Ranker | None) -> Snapshot:
        """The current snapshot; a new one if the model changed since."""
        version = ranker.version if ranker else NO_MODEL
        snapshot = self._snapshot
        if snapshot is None or snapshot.version != version:
            snapshot = self._snapshot = take_snapshot(
                state, state.popular()[:BATCH_CANDIDATES], ranker
            )
        return snapshot


def take_snapshot(state: ServingState, codes: Codes, ranker: Ranker | None) -> Snapshot:
    """Rank these items once, on their features as they stand now."""
    columns, now_s = state.columns, state.now_s()
    rows = ranking_matrix(
        columns.counts[codes],
        columns.as_of_s[codes],
        columns.created_s[codes],
        columns.duration_ms[codes],
        np.zeros(len(codes)),  # no vectors
        np.full(len(codes), "trending"),
        now_s,
    ).astype(np.float32)
    version = ranker.version if ranker else NO_MODEL
    order = np.arange(len(codes))
    if ranker is not None and len(codes):
        try:
            order = np.argsort(-ranker.predict(rows), kind="stable")
        except Exception:  # a model that cannot score: the day's popularity order
            log.exception("model %s failed to score the batch snapshot", version)
    ranked = codes[order]
    return Snapshot(now_s, version, ranked, rows[order], {int(c): k for k, c in enumerate(ranked)})


def baseline_feed(
    state: ServingState,
    baselines: Baselines,
    ranker: Ranker | None,
    user_id: str,
    n: int,
    policy: Policy,
    rng: random.Random | None = None,
) -> tuple[Feed, list[Impression]]:
    """A page of `n` items by one of the baseline policies (not `realtime`)."""
    now = datetime.fromtimestamp(state.now_s(), UTC)
    user = state.user(user_id)
    columns = state.columns
    version = NO_MODEL
    if policy == "batch":
        snap = baselines.snapshot(state, ranker)
        picked = eligible(state, user, snap.codes, n)
        rows = snap.rows[[snap.row_of[c] for c in picked.tolist()]]
        version = snap.version
    else:
        if policy == "popularity":
            proposals = state.popular()
        elif policy == "random":
            seed = (rng or random).getrandbits(32)
            proposals = np.random.default_rng(seed).permutation(np.flatnonzero(columns.alive))
        else:
            raise ValueError(f"unknown baseline policy {policy!r}")
        picked = eligible(state, user, proposals, n)
        rows = ranking_matrix(
            columns.counts[picked],
            columns.as_of_s[picked],
            columns.created_s[picked],
            columns.duration_ms[picked],
            np.zeros(len(picked)),
            np.full(len(picked), policy),
            now.timestamp(),
        ).astype(np.float32)
    chosen = [
        Picked(code=int(code), row=k, source=policy, propensity=1.0, score=0.0, prerank=0.0)
        for k, code in enumerate(picked.tolist())
    ]
    return page(state, user_id, chosen, rows, version, now, len(picked))
