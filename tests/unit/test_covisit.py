"""Co-visitation: pairs within a user's recent window weighed by their distance, scores over
the last videos weighed by recency and divided by popularity, the neighbour cap."""

from collections import deque

import numpy as np
import pytest

from models.covisit import REMEMBERED, CoVisitConfig, CoVisits, lookup
from swipeloop.settings import Settings

FLAT = CoVisitConfig(window=10, gap_decay=1.0, popularity=0.0, query=5, query_decay=1.0)


def test_pairs_count_both_ways_within_the_window_only() -> None:
    c = CoVisits(FLAT)
    watched: deque[int] = deque(maxlen=REMEMBERED)  # as the API keeps them
    for item in range(12):  # 0, 1, ..., 11 in a row
        c.add(watched, item)
        watched.append(item)
    assert c.neighbours(1) == {k: 1.0 for k in range(12) if k != 1}
    # 0 pairs only with the next 10 videos: 11 came too late
    assert c.neighbours(0) == {k: 1.0 for k in range(1, 11)}
    c.add([5, 5], 5)  # a video with itself: no pair
    assert 5 not in c.neighbours(5)


def test_a_pair_weighs_less_the_further_apart_its_videos_were_watched() -> None:
    c = CoVisits(CoVisitConfig(window=3, gap_decay=0.5))
    c.add([1, 2, 3], 4)  # 3 just before 4: 1; 2: 0.5; 1: 0.25
    assert c.neighbours(4) == {3: 1.0, 2: 0.5, 1: 0.25}
    assert c.neighbours(1) == {4: 0.25}


def test_scores_sum_the_last_videos_and_leave_them_out() -> None:
    c = CoVisits(FLAT)
    for _ in range(3):
        c.add([1], 2)  # after 1, people watched 2 (3 times) ...
    c.add([1], 3)  # ... and 3 once
    c.add([4], 3)  # after 4, 3
    codes, scores = c.scores([4, 1])
    assert codes.tolist() == [2, 3]  # 2: 3; 3: 1 + 1
    assert scores.tolist() == [1.0, 2 / 3]
    old = [9] + [1] * FLAT.query  # only the last `query` count: 9 is too old to be asked about
    c.add([9], 7)
    assert 7 not in c.scores(old)[0].tolist()
    assert c.scores([42])[0].tolist() == []


def test_the_newest_video_asks_loudest_and_popular_videos_are_divided_down() -> None:
    recency = CoVisits(CoVisitConfig(gap_decay=1.0, popularity=0.0, query_decay=0.5))
    recency.add([1], 10)
    recency.add([2], 20)
    assert recency.scores([1, 2])[0].tolist() == [20, 10]  # 2 is the newest
    assert recency.scores([1, 2])[1].tolist() == [1.0, 0.5]
    popular = CoVisits(CoVisitConfig(gap_decay=1.0, popularity=1.0, query_decay=1.0))
    for user in range(4):  # 10 is watched after 1 four times, but 10 is everywhere
        popular.add([1], 10)
        popular.add([50 + user], 10)
    popular.add([1], 20)  # 20: once, after 1 only
    codes, scores = popular.scores([1])
    assert codes.tolist() == [20, 10]  # 20: 1/1; 10: 4/8 (both divided by 1's 0 plays alike)
    assert scores.tolist() == [1.0, 0.5]


def test_an_item_keeps_its_strongest_neighbours() -> None:
    c = CoVisits(CoVisitConfig(max_neighbours=3))
    for other in range(1, 8):
        for _ in range(other):  # neighbour k co-visited k times
            c.add([other], 0)
    kept = c.neighbours(0)
    assert len(kept) <= 6
    assert {5, 6, 7} <= kept.keys()  # pruned at 7 (> 2 x 3) down to the strongest 3, then 7


def test_the_constants_come_from_the_settings() -> None:
    s = Settings(covisit_window=20, covisit_query_decay=0.5)
    assert CoVisitConfig.of(s) == CoVisitConfig(window=20, query_decay=0.5)
    with pytest.raises(ValueError, match=r"SWIPELOOP_COVISIT_WINDOW.*<= 50"):
        Settings.from_env({"SWIPELOOP_COVISIT_WINDOW": str(REMEMBERED + 1)})


def test_lookup_finds_scores_by_code() -> None:
    found, scores = np.array([9, 2, 5]), np.array([1.0, 0.5, 0.25])
    assert lookup(np.array([5, 7, 9, 0]), found, scores).tolist() == [0.25, 0.0, 1.0, 0.0]
    assert lookup(np.array([1]), np.zeros(0, np.int64), np.zeros(0)).tolist() == [0.0]
