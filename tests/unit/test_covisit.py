"""Co-visitation counts: pairs within a user's recent window, scores, the neighbour cap."""

from collections import deque

import numpy as np

from models.covisit import PAIR_WINDOW, QUERY, CoVisits, lookup


def test_pairs_count_both_ways_within_the_window_only() -> None:
    c = CoVisits()
    watched: deque[int] = deque(maxlen=PAIR_WINDOW)  # as the API keeps them
    for item in range(PAIR_WINDOW + 2):  # 0, 1, ..., 11 in a row
        c.add(watched, item)
        watched.append(item)
    assert c.neighbours(1) == {k: 1.0 for k in range(PAIR_WINDOW + 2) if k != 1}
    # 0 pairs only with the next PAIR_WINDOW videos: 11 came too late
    assert c.neighbours(0) == {k: 1.0 for k in range(1, PAIR_WINDOW + 1)}
    c.add([5, 5], 5)  # a video with itself: no pair
    assert 5 not in c.neighbours(5)


def test_scores_sum_the_last_videos_and_leave_them_out() -> None:
    c = CoVisits()
    for _ in range(3):
        c.add([1], 2)  # after 1, people watched 2 (3 times) ...
    c.add([1], 3)  # ... and 3 once
    c.add([4], 3)  # after 4, 3
    codes, scores = c.scores([4, 1])
    assert codes.tolist() == [2, 3]  # 2: 3; 3: 1 + 1
    assert scores.tolist() == [1.0, 2 / 3]
    old = [9] + [1] * QUERY  # only the last QUERY count: 9 is too old to be asked about
    c.add([9], 7)
    assert 7 not in c.scores(old)[0].tolist()
    assert c.scores([42])[0].tolist() == []


def test_an_item_keeps_its_strongest_neighbours() -> None:
    c = CoVisits(max_neighbours=3)
    for other in range(1, 8):
        for _ in range(other):  # neighbour k co-visited k times
            c.add([other], 0)
    kept = c.neighbours(0)
    assert len(kept) <= 6
    assert {5, 6, 7} <= kept.keys()  # pruned at 7 (> 2 x 3) down to the strongest 3, then 7


def test_lookup_finds_scores_by_code() -> None:
    found, scores = np.array([9, 2, 5]), np.array([1.0, 0.5, 0.25])
    assert lookup(np.array([5, 7, 9, 0]), found, scores).tolist() == [0.25, 0.0, 1.0, 0.0]
    assert lookup(np.array([1]), np.zeros(0, np.int64), np.zeros(0)).tolist() == [0.0]
