"""The canary judge's rule and the canary's share of users."""

from datetime import UTC, datetime

import pytest

from swipeloop.settings import Settings
from training.canary import Canary, Side, decide, serves


def side(sessions: int, watch_s: float) -> Side:
    return Side(sessions, watch_s, 3.0, 0.25)


def test_the_judge_waits_for_enough_sessions_on_each_side() -> None:
    verdict = decide(side(9, 50.0), side(400, 10.0), needed=10, margin=0.05)
    assert verdict.state == "running"
    assert verdict.reason == "waiting: 9 canary and 400 production sessions of 10 each"
    assert decide(None, side(400, 10.0), 10, 0.05).state == "running"


def test_a_canary_passes_at_the_margin_and_fails_below_it_beyond_the_noise() -> None:
    at_bar = decide(side(10, 95.0), side(10, 100.0), needed=10, margin=0.05)
    assert at_bar.state == "promoted"
    assert at_bar.reason.startswith("canary passed: watch 95.0 s per session over 10 sessions")
    assert "(bar 95.0 s at margin 0.05); early skips 25.0% against 25.0%" in at_bar.reason
    # sd 3 s a session: the difference's standard error is sqrt(0.9 + 0.81) = 1.31 s
    below = decide(side(10, 92.0), side(10, 100.0), needed=10, margin=0.05)
    assert below.state == "dropped"
    assert below.reason.startswith(
        "canary failed: below the bar by 3.0 s, more than 1.96 standard errors (1.3 s); watch"
    )


def test_below_the_bar_within_the_noise_the_judge_waits_for_more_sessions() -> None:
    close = decide(side(10, 94.0), side(10, 100.0), needed=10, margin=0.05)
    assert close.state == "running"
    assert close.reason.startswith(
        "waiting: below the bar by 1.0 s, within 1.96 standard errors (1.3 s), until 40 "
        "sessions a side"
    )
    assert decide(side(39, 94.1), side(400, 100.0), 10, 0.05).state == "running"
    late = decide(side(40, 94.9), side(400, 100.0), needed=10, margin=0.05)
    assert late.state == "dropped"
    assert late.reason.startswith("canary failed: still below the bar after 40 sessions a side")


def test_the_canary_serves_its_share_of_users_and_a_new_one_reshuffles() -> None:
    at = datetime.now(UTC)
    one = Canary(version="v1", production="v0", share=20, started_at=at)
    two = Canary(version="v2", production="v0", share=20, started_at=at)
    users = [f"user-{k}" for k in range(5_000)]
    mine = {u for u in users if serves(one, u)}
    assert 0.18 < len(mine) / len(users) < 0.22
    theirs = {u for u in users if serves(two, u)}
    assert 0.02 < len(mine & theirs) / len(users) < 0.06  # independent: about 20 % of 20 %


def test_a_canary_share_over_half_is_refused() -> None:
    with pytest.raises(ValueError, match="SWIPELOOP_CANARY_SHARE"):
        Settings.from_env({"SWIPELOOP_CANARY_SHARE": "60"})
