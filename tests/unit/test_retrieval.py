"""Retrieval, filters, pre-rank and fallbacks on a hand-built serving state (no database):
the catalog, features and vectors arrive through the same `apply_*` calls the feeder makes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
import pytest
from clickhouse_connect.driver.client import Client

from api.diversity import arrange
from api.feed import NO_MODEL, STAGES, build_feed, diversify
from api.retrieval import REASONS, SCRATCH, retrieve
from api.state import ServingState
from models.features.counts import RANK_WINDOWS, packed_counts
from models.features.ranking import ranking_features
from models.features.weights import COUNTERS
from swipeloop.contracts import Item, ItemFeatures, ItemVector, ReceivedEvent
from swipeloop.settings import Settings

DIM = 8
NOW = datetime.now(UTC)


def state_with(items: int, *, candidates: int = 100, vectors: bool = True) -> ServingState:
    """`items` items by `items // 4` creators (i0 newest), features for the first tenth,
    random vectors for all."""
    settings = Settings(embedding_dim=DIM, candidates=candidates, rank_slice=50)
    state = ServingState(settings, cast(Client, None))
    for i in range(items):
        state.apply_item(
            Item(
                item_id=f"i{i}",
                creator_id=f"c{i % (items // 4)}",
                duration_ms=10_000 + i,
                tags=[f"t{i % 7}"],
                created_at=NOW - timedelta(hours=i),
            )
        )
    for i in range(items // 10):
        state.apply_features(features(f"i{i}", plays=items - i))
    if vectors:
        rng = np.random.default_rng(1)
        state.apply_vectors(
            [
                ItemVector(
                    item_id=f"i{i}", version=1, updated_at=NOW, vector=rng.normal(size=DIM).tolist()
                )
                for i in range(items)
            ]
        )
    return state


def features(item_id: str, plays: float) -> ItemFeatures:
    row = np.zeros(len(COUNTERS))
    row[COUNTERS.index("plays")] = plays
    row[COUNTERS.index("impressions")] = 2 * plays
    return ItemFeatures(
        item_id=item_id,
        as_of=NOW,
        window_s=list(RANK_WINDOWS),
        window_end=[NOW] * len(RANK_WINDOWS),
        counts=packed_counts(np.array([row] * len(RANK_WINDOWS))),
    )


def event(user: str, item: str, kind: str, watch_ms: int = 0) -> ReceivedEvent:
    return ReceivedEvent(
        event_id=cast(Any, "00000000-0000-0000-0000-000000000000"),
        user_id=user,
        item_id=item,
        kind=kind,  # type: ignore[arg-type]
        watch_ms=watch_ms,
        client_ts=NOW,
        session_id="s",
        seq=0,
        received_at=NOW,
    )


def names(state: ServingState, codes: Any) -> list[str]:
    return state.items.names(np.asarray(codes, dtype=np.int64))


def test_exactly_limit_distinct_candidates_when_enough_are_eligible() -> None:
    state = state_with(400)
    state.user_vectors["u"] = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
    got = retrieve(state, state.user("u"), 100)
    assert len(got.codes) == len(set(got.codes.tolist())) == 100
    assert sum(got.per_source.values()) == 100
    assert len(got.sources) == 100
    assert {"ann", "trending"} <= set(got.per_source)


def test_every_filter_drops_and_counts_by_reason() -> None:
    state = state_with(200, candidates=200)
    user = state.user("u")
    state.apply_impression(cast(Any, type("I", (), {"user_id": "u", "item_id": "i1"})))
    state.apply_event(event("u", "i2", "not_interested"))
    state.apply_event(event("u", "i3", "block"))  # creator c3: i3, i53, i103, i153
    state.apply_item(
        Item(item_id="i4", creator_id="c4", duration_ms=1, created_at=NOW, deleted=True)
    )
    got = retrieve(state, user, 200)
    shown = set(names(state, got.codes))
    assert not shown & {"i1", "i2", "i3", "i53", "i103", "i153", "i4"}
    assert len(shown) == 200 - 7  # everything else in the catalog, once
    assert got.dropped == {"seen": 1, "not_interested": 1, "blocked_creator": 4}
    assert set(got.dropped) <= set(REASONS[1:])
    # the per-thread scratch arrays are left as they were found, for the next request
    assert not SCRATCH.why.any() and not SCRATCH.taken.any()
    again = retrieve(state, user, 200)
    assert again.dropped == got.dropped and set(names(state, again.codes)) == shown


def test_a_new_user_gets_trending_then_fresh_then_the_catalog() -> None:
    state = state_with(300)
    got = retrieve(state, state.user("newcomer"), 100)
    assert len(got.codes) == 100
    assert set(got.per_source) <= {"trending", "fresh", "catalog", "followed"}
    assert names(state, got.codes[:3]) == ["i0", "i1", "i2"]  # the best trending first


def test_a_failing_index_falls_back_to_the_other_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    state = state_with(300)
    state.user_vectors["u"] = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)

    def broken(*_: Any) -> Any:
        raise RuntimeError("index not ready")

    monkeypatch.setattr(state.index, "search_codes", broken)
    feed, impressions, _ = build_feed(state, None, "u", 20, rng=random.Random(1))
    assert len(feed.items) == 20 and len(impressions) == 20
    assert "ann" not in {i.source for i in feed.items}


def test_no_model_serves_the_prerank_order_and_logs_the_served_rows() -> None:
    state = state_with(300)
    feed, impressions, stages = build_feed(state, None, "u", 10, rng=random.Random(1))
    assert feed.model_version == NO_MODEL
    assert set(stages) == set(STAGES)
    explored = [i for i in feed.items if i.source == "explore"]
    ranked = [i.score for i in feed.items if i.source != "explore"]
    assert ranked == sorted(ranked, reverse=True) or explored  # diversity may reorder
    first = impressions[0]
    item = state.catalog[first.item_id]
    k = int(first.item_id[1:])
    live = features(first.item_id, plays=300 - k) if k < 30 else None
    row = ranking_features(item, live, first.features[0], "trending", datetime.now(UTC))
    # the logged row is the feature function's row, as float32 (the trending score and the
    # age move with the clock)
    assert first.features[2:12] == pytest.approx(row[2:12], rel=1e-5)
    assert first.features[1] == pytest.approx(row[1], rel=1e-3)
    assert first.features[13:] == pytest.approx(row[13:])


def test_fifty_pages_never_repeat_and_positives_shape_the_short_term_vector() -> None:
    state = state_with(2_000, candidates=300)
    shown: set[str] = set()
    for k in range(50):
        feed, _, _ = build_feed(state, None, "binge", 20, rng=random.Random(k))
        page = {i.item_id for i in feed.items}
        assert not page & shown
        shown |= page
        state.apply_event(event("binge", feed.items[0].item_id, "like"))
    assert len(shown) == 1_000
    got = retrieve(state, state.user("binge"), 300)
    assert {"ann", "ann_short", "similar"} <= set(got.per_source)


def test_diversify_looks_past_the_head_only_when_the_head_cannot_fill_the_page() -> None:
    state = ServingState(Settings(embedding_dim=DIM, explore_every=0), cast(Client, None))
    for i in range(300):
        creator = "a" if i < 100 else "b" if i < 200 else f"c{i}"
        state.apply_item(Item(item_id=f"i{i}", creator_id=creator, duration_ms=1, created_at=NOW))
    ranked = state.items.known([f"i{i}" for i in range(300)])
    # 50 items of one creator head the list: the rule lets 2 of them in, the rest comes later
    page = diversify(state, state.columns, ranked, 10, random.Random(0))
    creators = [state.catalog[n].creator_id for n in names(state, ranked[[s.index for s in page]])]
    assert len(page) == 10 and creators.count("a") == 2 and creators.count("b") == 2
    # a head that suffices gives what the whole list gives
    mixed = ranked[::-1]
    assert diversify(state, state.columns, mixed, 10, random.Random(0)) == arrange(
        [state.catalog[n].creator_id for n in names(state, mixed)],
        [None] * len(mixed),
        10,
        explore_every=0,
    )
