from datetime import UTC, datetime, timedelta

import numpy as np

from models.embeddings import EmbeddingTable, mean_vector
from models.features import (
    FEATURE_NAMES,
    ItemStats,
    add_event,
    engagement_weight,
    item_features,
    merge_stats,
    ranking_features,
    trending_score,
)
from swipeloop.contracts import Item

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def test_window_stats_count_views_likes_and_completion() -> None:
    s = ItemStats()
    add_event(s, "impression", 0, 10_000)
    add_event(s, "watch", 5_000, 10_000)
    add_event(s, "loop", 10_000, 10_000)
    add_event(s, "watch", 30_000, 10_000)  # over-long watch caps at 1
    add_event(s, "like", 0, 10_000)
    f = item_features("v1", 300, NOW, s)
    assert (f.impressions, f.views, f.likes) == (1, 3, 1)
    assert f.completion == round((0.5 + 1.0 + 1.0) / 3, 6)


def test_unknown_duration_counts_the_view_but_not_completion() -> None:
    s = add_event(ItemStats(), "watch", 5_000, None)
    assert s.views == 1 and s.completion_n == 0
    assert item_features("v1", 300, NOW, s).completion == 0.0


def test_merge_equals_single_fold() -> None:
    events = [("watch", 3_000), ("like", 0), ("impression", 0), ("loop", 8_000), ("skip", 100)]
    whole = ItemStats()
    a, b = ItemStats(), ItemStats()
    for i, (kind, ms) in enumerate(events):
        add_event(whole, kind, ms, 8_000)
        add_event(a if i % 2 else b, kind, ms, 8_000)
    assert merge_stats(a, b) == whole


def test_engagement_weight_signs() -> None:
    assert engagement_weight("like", 0) > 0
    assert engagement_weight("watch", 12_000) > 0
    assert engagement_weight("watch", 1_000) == 0
    assert engagement_weight("skip", 500) < 0
    assert engagement_weight("not_interested", 0) < 0
    assert engagement_weight("impression", 0) == 0


def test_trending_decays_with_window_age() -> None:
    f = item_features("v1", 300, NOW, add_event(ItemStats(), "like", 0, 1))
    assert trending_score(f, NOW) > trending_score(f, NOW + timedelta(hours=5)) > 0
    assert trending_score(None, NOW) == 0


def test_ranking_features_row_matches_names() -> None:
    item = Item(
        item_id="v1", creator_id="c1", duration_ms=20_000, created_at=NOW - timedelta(hours=2)
    )
    row = ranking_features(item, None, 0.5, "ann", NOW)
    assert len(row) == len(FEATURE_NAMES)
    named = dict(zip(FEATURE_NAMES, row, strict=True))
    assert named["ann_score"] == 0.5 and named["from_ann"] == 1.0 and named["from_fresh"] == 0.0
    assert named["age_hours"] == 2.0 and named["duration_s"] == 20.0


def test_co_engagement_moves_vectors_closer() -> None:
    table = EmbeddingTable(dim=16, lr=0.1)
    for i in range(50):
        table.row(f"other{i}")

    def cos(a: str, b: str) -> float:
        va, vb = table.get(a), table.get(b)
        return float(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb))

    before = cos("a", "b")
    for _ in range(40):
        table.update("a", "b", 1.0, negatives=2)
    assert cos("a", "b") > before + 0.3


def test_mean_vector_is_unit_length() -> None:
    v = mean_vector([np.ones(4, np.float32), np.ones(4, np.float32) * 3])
    assert v is not None and abs(float(np.linalg.norm(v)) - 1.0) < 1e-6
    assert mean_vector([]) is None
