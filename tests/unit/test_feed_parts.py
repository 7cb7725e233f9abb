"""The feed's pure parts: the diversity arrangement and staged exposure."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import numpy as np

from api.diversity import arrange
from api.item_columns import ItemColumns
from api.lists import Lists, trending_scores
from models.features.counts import RANK_WINDOWS
from models.features.exposure import EXPOSURE_STAGES, exposure_room, exposure_stage, reaction_draws
from models.features.trending import trending_scores as score_trending
from models.features.weights import COUNTERS
from swipeloop.contracts import ItemFeatures


def windows_ok(creators: list[str], most: int = 2, span: int = 10) -> bool:
    return all(
        max(creators[a : a + span].count(c) for c in creators[a : a + span]) <= most
        for a in range(max(1, len(creators) - span + 1))
    )


def test_no_creator_more_than_twice_in_any_ten_even_when_one_dominates_the_ranking() -> None:
    rng = random.Random(4)
    creators = ["star"] * 30 + [f"c{rng.randrange(8)}" for _ in range(200)]
    rng.shuffle(creators)
    tags: list[str | None] = [rng.choice(["a", "b", None]) for _ in creators]
    slots = arrange(creators, tags, 60, explore_every=0)
    placed = [creators[s.index] for s in slots]
    assert len(slots) == 60 and len({s.index for s in slots}) == 60
    assert windows_ok(placed)


def test_a_page_is_shorter_rather_than_less_diverse() -> None:
    slots = arrange(["one"] * 50, [None] * 50, 20, explore_every=0)
    assert len(slots) == 2


def test_exploration_slots_come_from_the_pool_with_their_propensity() -> None:
    creators = [f"c{i}" for i in range(100)]
    pool = list(range(80, 100))
    slots = arrange(creators, [None] * 100, 30, pool=pool, rng=random.Random(1))
    explored = [s for s in slots if s.explore]
    assert [slots.index(s) for s in explored] == [9, 19, 29]
    # each drawn from the first 5 of the pool's order that are still free
    assert explored[0].index in pool[:5] and all(s.index in pool[:7] for s in explored)
    assert [s.propensity for s in explored] == [1 / 5] * 3
    assert all(s.propensity == 1.0 for s in slots if not s.explore)


def test_exploration_follows_the_pool_order_not_the_ranking() -> None:
    creators = [f"c{i}" for i in range(100)]
    slots = arrange(creators, [None] * 100, 10, pool=[99, 98], explore_top=1)
    assert [s.index for s in slots if s.explore] == [99]


def test_thompson_draws_favour_the_new_video_its_audience_finished() -> None:
    day = np.zeros((3, len(COUNTERS)), np.float32)
    day[:, COUNTERS.index("plays")] = [20, 20, 0]
    day[:, COUNTERS.index("completion")] = [19, 1, 0]  # a gem, a flop, untested
    rng = np.random.default_rng(0)
    draws = np.stack([reaction_draws(day, rng) for _ in range(2_000)])
    assert (draws[:, 0] > draws[:, 1]).mean() > 0.99
    assert 0.85 < draws[:, 0].mean() < 0.95 and 0.05 < draws[:, 1].mean() < 0.15
    assert 0.45 < draws[:, 2].mean() < 0.55 and draws[:, 2].std() > 0.25  # anywhere


def test_genres_are_shuffled_when_an_alternative_is_near() -> None:
    creators = [f"c{i}" for i in range(6)]
    tags: list[str | None] = ["a", "a", "a", "b", "b", "c"]
    slots = arrange(creators, tags, 6, explore_every=0)
    placed = [tags[s.index] for s in slots]
    assert placed[:3] == ["a", "b", "a"]


def features(impressions: float, plays: float, completion: float, likes: float) -> ItemFeatures:
    row = np.zeros(len(COUNTERS), np.float32)
    row[COUNTERS.index("impressions")] = impressions
    row[COUNTERS.index("plays")] = plays
    row[COUNTERS.index("completion")] = completion
    row[COUNTERS.index("likes")] = likes
    now = datetime.now(UTC)
    return ItemFeatures(
        item_id="new", as_of=now, window_s=[86400], window_end=[now], counts=row.tobytes()
    )


def test_a_new_video_is_promoted_only_when_its_audience_liked_it() -> None:
    first = EXPOSURE_STAGES[0]
    assert exposure_stage(None) == 0 and exposure_room(None) == first
    watching = features(first / 2, first / 2, first / 4, 0)
    assert exposure_stage(watching) == 0 and exposure_room(watching) == first / 2
    loved = features(first, first, 0.9 * first, 0.2 * first)
    assert exposure_stage(loved) == 1 and exposure_room(loved) > 0
    ignored = features(first, first, 0.1 * first, 0)
    assert exposure_stage(ignored) == 0 and exposure_room(ignored) <= 0


def test_the_shared_lists_score_trending_at_the_serving_clock_not_the_wall_clock() -> None:
    """A replay pins the serving state's clock to the end of its timeline: the trending
    scores are then the same however long ago (in wall time) that was."""
    hour = np.zeros((3, len(COUNTERS)), np.float32)  # RANK_WINDOWS: hour, 5 min, day
    hour[:, COUNTERS.index("plays")] = 40
    as_of = datetime(2026, 11, 28, 12, tzinfo=UTC)
    columns = ItemColumns(4)
    columns.set_features(
        0,
        ItemFeatures(
            item_id="i0",
            as_of=as_of,
            window_s=list(RANK_WINDOWS),
            window_end=[as_of] * 3,
            counts=hour.tobytes(),
        ),
    )
    pinned = as_of.timestamp() + 1800
    lists = Lists(lambda: columns, lambda: pinned)
    expected = score_trending(hour[None], np.array([as_of.timestamp()]), pinned)[0]
    assert trending_scores(lists)[0] == expected > 0
    wall = Lists(lambda: columns)  # the wall clock: days after `as_of`, decayed far more
    assert 0 < trending_scores(wall)[0] < expected / 10
