"""The simulator's measures on timelines whose answers are known."""

from swipeloop.simulator import BUCKET_S, Tally, adaptation_lag, minutes_to
from swipeloop.world import Burst


def test_adaptation_lag_is_the_time_to_half_the_highest_burst_share() -> None:
    burst = Burst(topic=1, start_s=100, end_s=200, lift=1.5)
    first = int(100 // BUCKET_S)
    # bucket: [impressions, impressions of the bursting topic, watch s]
    timeline = {first - 1: [10, 0, 0], first: [10, 1, 0], first + 1: [10, 2, 0]}
    timeline |= {first + 2: [10, 5, 0], first + 3: [10, 8, 0], first + 4: [10, 7, 0]}
    assert adaptation_lag(timeline, [burst]) == 2 * BUCKET_S  # 5 of 10 >= half of 8 of 10
    assert adaptation_lag({first: [10, 0, 0]}, [burst]) is None  # never moved
    assert adaptation_lag(timeline, []) is None


def test_minutes_to_views_is_the_median_over_gems_that_got_there() -> None:
    views = {"a": [60.0 * k for k in range(1, 4)], "b": [30.0, 30.0, 90.0], "c": [1.0]}
    assert minutes_to(views, 3) == (3.0 + 1.5) / 2  # c never got 3 views
    assert minutes_to(views, 5) is None


def test_an_arms_figures() -> None:
    t = Tally(sessions=[10.0, 30.0], burst_sessions=[30.0], plays=10, likes=2, early_skips=5)
    t.shown.update({"v1": 3, "v2": 1})
    t.creators.update({"c1": 2, "c2": 2})
    figures = t.figures(catalog=8)
    assert figures["watch_s_per_session"] == 20.0
    assert figures["burst_watch_s_per_session"] == 30.0
    assert figures["like_rate"] == 0.2 and figures["early_skip_rate"] == 0.5
    assert figures["coverage"] == 0.25 and figures["creator_gini"] == 0.0
