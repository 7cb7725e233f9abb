"""Replay's pure parts on hand-made ratings whose answers are known."""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from models.covisit import CoVisitConfig
from sim.movielens import (
    Ratings,
    RatingsError,
    history_split,
    hit_rate_and_ndcg,
    item_knn,
    leave_last_out,
    popularity,
    read_ratings,
    recent_item_knn,
    swipes,
)
from sim.tuning import covisit_settings, covisits, recommend, tune, watched_rating


def ratings(rows: list[tuple[int, int, float, int]]) -> Ratings:
    u, i, r, t = zip(*rows, strict=True)
    return Ratings(np.array(u), np.array(i), np.array(r, dtype=float), np.array(t))


# Users 1-3 like items 10, 11, 12 together; user 4 rated 20 and 21; 30 is everyone's.
TINY = ratings(
    [
        (1, 10, 5, 1), (1, 11, 4, 2), (1, 30, 3, 3), (1, 12, 5, 9),
        (2, 10, 4, 1), (2, 12, 5, 2), (2, 30, 2, 3), (2, 11, 5, 9),
        (3, 11, 4, 1), (3, 12, 4, 2), (3, 30, 1, 3), (3, 10, 4, 9),
        (4, 20, 5, 1), (4, 30, 3, 2), (4, 21, 5, 5), (4, 22, 3, 5),
        (5, 30, 4, 1),
    ]
)  # fmt: skip


def test_the_last_rating_is_held_out_ties_by_the_larger_item() -> None:
    train, held = leave_last_out(TINY)
    # user 4's last two share a time: 22 > 21 is held; user 5 has one rating: not scored
    assert held == {1: 12, 2: 11, 3: 10, 4: 22}
    assert len(train) == len(TINY) - 4
    assert 5 in train.users.tolist()


def test_the_history_split_cuts_each_user_at_80_percent() -> None:
    train, held = history_split(TINY)
    # 4 ratings: the cut at 3 (items 1-3 replayed, the 4th held); user 5's one: replayed only
    assert held == {1: 12, 2: 11, 3: 10, 4: 22}
    assert len(train) == len(TINY) - 4
    ten = ratings([(9, item, 4, item) for item in range(10)])
    train, held = history_split(ten)  # 10 ratings: 8 replayed, the 9th held, the 10th unused
    assert held == {9: 8} and sorted(train.items.tolist()) == list(range(8))


def test_validation_chooses_among_the_grid_without_the_test_items() -> None:
    """The replayed part's own last items are the validation targets: what tune sees is the
    same whether or not the test items exist."""
    train, held = leave_last_out(TINY)
    config, tried = tune(train)
    assert len(tried) == 18 and config in [t.config for t in tried]
    best = max(t.ndcg_at_10 for t in tried)
    assert next(t for t in tried if t.config == config).ndcg_at_10 == best
    changed = ratings([(u, 99 if held.get(u) == i else i, r, t) for u, i, r, t in zip(
        TINY.users.tolist(), TINY.items.tolist(), TINY.ratings.tolist(), TINY.ts.tolist(),
        strict=True)])  # fmt: skip
    assert tune(leave_last_out(changed)[0]) == (config, tried)
    assert covisit_settings(CoVisitConfig())["covisit_window"] == 10


def test_validation_scores_what_a_replica_would_hold() -> None:
    """Users 1-3 watched two of 10, 11, 12 one after the other; the third follows."""
    train, held = leave_last_out(TINY)
    assert not watched_rating(1.0) and watched_rating(2.0) and watched_rating(5.0)
    model, last = covisits(train, CoVisitConfig())
    assert list(last[3]) == [11, 12]  # user 3's 30 (rated 1) was an early skip
    top = recommend(model, last, train, sorted(held))
    assert [top[u][0] for u in (1, 2, 3)] == [12, 11, 10]
    assert len(top[4]) == 3  # all 7 items less user 4's 4 rated ones: filled by popularity


def test_hit_rate_and_ndcg_of_known_lists() -> None:
    held = {1: 12, 2: 11, 3: 10, 4: 22}
    recommended = {1: [12, 99], 2: [99, 11], 3: [99] * 10 + [10], 4: []}
    out = hit_rate_and_ndcg(recommended, held, k=10)
    assert out["hr_at_10"] == 2 / 4
    assert out["ndcg_at_10"] == pytest.approx((1.0 + 1 / np.log2(3)) / 4)


def test_the_baselines_on_tiny_data() -> None:
    train, held = leave_last_out(TINY)
    users = sorted(held)
    # item-kNN: each of users 1-3 rated two of {10, 11, 12}, whose raters are the others:
    # the third one is the most similar unseen item; user 4's 22 was never rated before.
    knn = item_knn(train, users, k=1)
    assert knn == {1: [12], 2: [11], 3: [10], 4: [10]}
    assert hit_rate_and_ndcg(knn, held, k=1)["hr_at_1"] == 3 / 4
    # popularity: 30 (rated 5 times) is seen by all of them; then 10, 11, 12 (2 each), 20, 21
    pop = popularity(train, users, k=2)
    assert pop == {1: [12, 20], 2: [11, 20], 3: [10, 20], 4: [10, 11]}
    assert hit_rate_and_ndcg(pop, held, k=2)["hr_at_2"] == 3 / 4


PAIRS: list[tuple[int, int, float, int]] = [
    (6, 40, 5, 1), (6, 50, 5, 2), (6, 99, 5, 3),
    (7, 40, 5, 1), (7, 41, 5, 2), (7, 98, 5, 3),
    (8, 50, 5, 1), (8, 51, 5, 2), (8, 97, 5, 3),
]  # fmt: skip


def test_recent_items_weigh_more_in_the_recency_weighted_item_knn() -> None:
    """User 6 rated 40, then 50. 41 goes with 40 and 51 with 50, equally: item-kNN over the
    whole history ties them (the smaller id wins); weighted by recency, 51 (next to the newer
    item, weight 1) beats 41 (0.9)."""
    train, _ = leave_last_out(ratings(PAIRS))
    assert item_knn(train, [6], k=1) == {6: [41]}
    assert recent_item_knn(train, [6], k=1) == {6: [51]}
    assert recent_item_knn(train, [6], k=1, decay=1.0) == {6: [41]}  # no decay: the tie again


def test_ratings_map_to_swipes() -> None:
    assert swipes(5.0) == (("watch", 1.0), ("like", 0.0))
    assert swipes(3.5) == (("watch", 0.6),)
    assert swipes(2.0) == (("skip", 0.2),)
    assert swipes(0.5) == (("skip", 0.01),)


def test_a_bad_ratings_file_says_where(tmp_path: Path) -> None:
    good = tmp_path / "ok.csv"
    good.write_text("userId,movieId,rating,timestamp\n1,10,4.5,100\n2,10,1,101\n")
    assert len(read_ratings(good)) == 2
    cases = {
        "userId,movieId,rating\n1,10,4.5\n": "timestamp",
        "userId,movieId,rating,timestamp\n1,10,4.5,100\n1,x,3,4\n": "x",
        "userId,movieId,rating,timestamp\n1,10,4.5,100\n1,11,7,4\n": "line 3",
        "userId,movieId,rating,timestamp\n": "no ratings",
    }
    for text, says in cases.items():
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(RatingsError, match=says):
            read_ratings(bad)


def test_swipeloop_replay_refuses_a_bad_file_and_says_where(tmp_path: Path) -> None:
    bad = tmp_path / "ratings.csv"
    bad.write_text("userId,movieId,rating,timestamp\n1,10,4.5,100\n1,11,9,101\n")
    result = CliRunner().invoke(app, ["replay", str(bad)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "line 3: rating 9.0 is not in 0.5-5" in said
