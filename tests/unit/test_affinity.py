"""A user's decayed tag and creator affinity (models.affinity)."""

import numpy as np
import pytest

from models.affinity import HALF_LIFE_S, MAX_KEYS, Affinity, Momentum, prior


def test_scores_add_up_and_halve_every_half_life() -> None:
    a = Affinity()
    a.add(7, 1.0, at_s=1000.0)
    a.add(7, 1.0, at_s=1000.0 + HALF_LIFE_S)  # the first has halved by then
    a.add(3, -0.5, at_s=1000.0)
    got = a.lookup(np.array([7, 3, 99, -1]), now_s=1000.0 + 2 * HALF_LIFE_S)
    assert got == pytest.approx([0.75, -0.125, 0.0, 0.0])


def test_an_event_older_than_the_score_is_faded_to_the_scores_time() -> None:
    a, b = Affinity(), Affinity()
    a.add(1, 1.0, at_s=HALF_LIFE_S)
    a.add(1, 1.0, at_s=0.0)  # arrived late
    b.add(1, 1.0, at_s=0.0)
    b.add(1, 1.0, at_s=HALF_LIFE_S)  # in order
    now = 3 * HALF_LIFE_S
    assert a.lookup(np.array([1]), now) == pytest.approx(b.lookup(np.array([1]), now))


def test_only_the_strongest_keys_are_kept() -> None:
    a = Affinity()
    for key in range(2 * MAX_KEYS + 1):
        a.add(key, 1.0 + key, at_s=0.0)
    assert len(a) == MAX_KEYS
    kept = a.lookup(np.arange(2 * MAX_KEYS + 1), now_s=0.0)
    assert kept[-1] > 0 and kept[0] == 0  # the strongest stayed, the weakest went


def test_the_prior_is_bounded_and_signed() -> None:
    got = prior(np.array([0.0, 5.0, -5.0, 1e6]), np.array([0.0, 0.0, 0.0, 1e6]))
    assert got[0] == 0 and 0.8 < got[1] < 1 and -1 < got[2] < -0.8 and got[3] <= 1


def test_momentum_is_how_a_tag_is_taken_now_against_usually() -> None:
    m = Momentum()
    t = 10_000.0
    for k in range(200):  # an hour of lukewarm swipes on tags 1 and 2
        m.add(1, 0.2, at_s=t - 3600 + 18 * k)
        m.add(2, 0.2, at_s=t - 3600 + 18 * k)
    for k in range(20):  # then, in the last minute, everyone finishes tag 1's videos
        m.add(1, 1.0, at_s=t - 60 + 3 * k)
    now, usual, unknown, untagged = m.lookup(np.array([1, 2, 3, -1]), now_s=t)
    assert now > 0.4  # a burst: well above its usual 0.2-0.3
    assert usual == pytest.approx(0.0)  # tag 2 is taken as it usually is
    assert unknown == 0.0 and untagged == 0.0
    later = m.lookup(np.array([1]), now_s=t + 1800)[0]
    assert later == 0.0  # the burst's swipes have faded below MIN_SWIPES
