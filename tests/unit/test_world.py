"""The simulated world: deterministic by seed, bursts that lift a topic, exposure Gini."""

import numpy as np
import pytest

from sim.world import POLICIES, Burst, World, gini


def play(
    world: World, seed: int, seconds: float = 30.0
) -> list[tuple[str, str, list[tuple[str, int]]]]:
    """Everyone watches the first videos in turn while uploads arrive: what they did."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str, list[tuple[str, int]]]] = []
    for t in range(int(seconds)):
        world.uploads(float(t))
        for person in world.people:
            video = world.videos[(t * 7 + len(out)) % len(world.videos)]
            world.drift(person, 1.0, rng)
            out.append((person.user_id, video.item_id, world.react(person, video, t, rng).kinds()))
    return out


def test_a_seed_makes_the_same_world_and_the_same_run() -> None:
    a, b = World.create(5, users=8, videos=50), World.create(5, users=8, videos=50)
    assert [v for v in a.videos] == [v for v in b.videos]
    assert all(np.array_equal(p.taste, q.taste) for p, q in zip(a.people, b.people, strict=True))
    assert play(a, seed=1) == play(b, seed=1)
    assert len(a.videos) == 50 + 14  # an upload every 2 s: at 2, 4, ..., 28 s
    assert [v.gem for v in a.videos[50:55]] == [True, False, False, False, False]
    other = World.create(6, users=8, videos=50)
    assert [v.topic for v in other.videos] != [v.topic for v in a.videos]
    assert {p.policy for p in a.people} == set(POLICIES)


def test_a_burst_lifts_its_topic_while_it_lasts() -> None:
    burst = Burst(topic=3, start_s=10, end_s=20, lift=2.0)
    world = World.create(1, users=50, videos=200, bursts=[burst])
    assert world.lift(3, 15) == 2.0 and world.lift(3, 25) == 0.0 and world.lift(4, 15) == 0.0
    topical = [v for v in world.videos if v.topic == 3]
    rng = np.random.default_rng(0)

    def mean_fraction(t: float) -> float:
        return float(
            np.mean([world.react(p, v, t, rng).fraction for p in world.people for v in topical])
        )

    assert mean_fraction(15) > mean_fraction(5) + 0.2


def test_gini_of_known_exposures() -> None:
    assert gini(np.array([5, 5, 5, 5])) == 0.0
    assert gini(np.array([0, 0, 0, 8])) == pytest.approx(0.75)
    assert gini(np.array([])) == 0.0
