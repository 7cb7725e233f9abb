"""Pure feature functions: the one definition used by the flows, the trainer and the API."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from swipeloop.contracts import Item, ItemFeatures

VIEW_KINDS = frozenset({"watch", "loop"})
POSITIVE_KINDS = frozenset({"like", "share", "comment", "follow", "loop"})
NEGATIVE_KINDS = frozenset({"not_interested", "block"})
EARLY_SKIP_MS = 2000
POSITIVE_WATCH_MS = 5000


@dataclass
class ItemStats:
    """Engagement counts of one item inside one window (a fold accumulator)."""

    impressions: int = 0
    views: int = 0
    likes: int = 0
    completion_sum: float = 0.0
    completion_n: int = 0


def add_event(stats: ItemStats, kind: str, watch_ms: int, duration_ms: int | None) -> ItemStats:
    """Count one event into the window's stats; completion only where the duration is known."""
    if kind == "impression":
        stats.impressions += 1
    elif kind in VIEW_KINDS:
        stats.views += 1
        if duration_ms:
            # a loop is a full watch; a watch counts its watched fraction, capped at 1
            stats.completion_sum += 1.0 if kind == "loop" else min(watch_ms / duration_ms, 1.0)
            stats.completion_n += 1
    elif kind == "like":
        stats.likes += 1
    return stats


def merge_stats(a: ItemStats, b: ItemStats) -> ItemStats:
    """Combine two partial accumulators of the same window."""
    return ItemStats(
        a.impressions + b.impressions,
        a.views + b.views,
        a.likes + b.likes,
        a.completion_sum + b.completion_sum,
        a.completion_n + b.completion_n,
    )


def item_features(item_id: str, window_s: int, window_end: datetime, s: ItemStats) -> ItemFeatures:
    """The published features of one item for one closed window."""
    completion = s.completion_sum / s.completion_n if s.completion_n else 0.0
    return ItemFeatures(
        item_id=item_id,
        window_s=window_s,
        window_end=window_end,
        impressions=s.impressions,
        views=s.views,
        likes=s.likes,
        completion=round(completion, 6),
    )


def engagement_weight(kind: str, watch_ms: int) -> float:
    """How strongly an event says "more like this" (> 0) or "less like this" (< 0); 0: neutral."""
    if kind in POSITIVE_KINDS:
        return 1.0
    if kind in NEGATIVE_KINDS:
        return -1.0
    if kind == "skip" and watch_ms < EARLY_SKIP_MS:
        return -0.5
    if kind == "watch" and watch_ms >= POSITIVE_WATCH_MS:
        return min(watch_ms / 15_000, 1.0)
    return 0.0


def trending_score(f: ItemFeatures | None, now: datetime) -> float:
    """Recent views, likes and completion, decayed by how old the window is (hours)."""
    if f is None:
        return 0.0
    age_h = max((now - f.window_end).total_seconds(), 0.0) / 3600.0
    raw = math.log1p(f.views) + 2.0 * math.log1p(f.likes) + f.completion
    return raw / (1.0 + age_h)


FEATURE_NAMES: tuple[str, ...] = (
    "ann_score",
    "trending",
    "views",
    "likes",
    "impressions",
    "completion",
    "like_rate",
    "age_hours",
    "duration_s",
    "from_ann",
    "from_trending",
    "from_fresh",
)


def ranking_features(
    item: Item,
    features: ItemFeatures | None,
    ann_score: float,
    source: str,
    now: datetime,
) -> list[float]:
    """The ranker's input row for one candidate; logged with the impression exactly as served."""
    views = features.views if features else 0
    likes = features.likes if features else 0
    return [
        ann_score,
        trending_score(features, now),
        float(views),
        float(likes),
        float(features.impressions if features else 0),
        features.completion if features else 0.0,
        (likes + 1.0) / (views + 20.0),  # smoothed toward a 5 % prior
        max((now - item.created_at).total_seconds(), 0.0) / 3600.0,
        item.duration_ms / 1000.0,
        1.0 if source == "ann" else 0.0,
        1.0 if source == "trending" else 0.0,
        1.0 if source == "fresh" else 0.0,
    ]
