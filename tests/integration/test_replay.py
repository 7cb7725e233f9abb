"""`swipeloop replay` end to end on a tiny ratings file: every replayed swipe through the API
into ClickHouse, and feeds that leave out what each user rated."""

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest

from api.state import ServingState
from cli.stack import fresh_stack
from models.covisit import CoVisitConfig, CoVisits
from sim.figures import HitRate, ReplayFigures
from sim.movielens import Ratings
from sim.replay import replay
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings

pytestmark = pytest.mark.integration
ITEMS, USERS, RATED = 14, 12, 5


def tiny(seed: int = 3) -> Ratings:
    """Each of `USERS` users rated `RATED` of `ITEMS` items, a minute apart."""
    rng = np.random.default_rng(seed)
    users, items, values, ts = [], [], [], []
    for u in range(USERS):
        for t, item in enumerate(rng.choice(ITEMS, RATED, replace=False)):
            users.append(u)
            items.append(int(item))
            values.append(float(rng.choice([1.0, 2.5, 3.0, 4.5])))
            ts.append(1_000_000 + 60 * t + u)
    return Ratings(np.array(users), np.array(items), np.array(values), np.array(ts))


def test_the_replay_command_chooses_on_validation_and_prints_the_figures(tmp_path: Path) -> None:
    """`swipeloop replay FILE --split history` as the README runs it, in a process of its own
    (it starts its own embedded stack and chdb engine)."""
    r = tiny()
    csv = tmp_path / "ratings.csv"
    lines = ["userId,movieId,rating,timestamp"]
    lines += [
        f"{u},{i},{v},{t}" for u, i, v, t in zip(r.users, r.items, r.ratings, r.ts, strict=True)
    ]
    csv.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWIPELOOP_")}
    done = subprocess.run(
        [sys.executable, "-m", "cli.app", "replay", str(csv), "--split", "history"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "SWIPELOOP_DATA_DIR": str(tmp_path / "var")},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = msgspec.json.decode(done.stdout.strip().splitlines()[-1], type=ReplayFigures)
    assert figures.users == USERS  # 5 ratings each: 4 (80 %) replayed, the 5th held out
    assert figures.events == sum(2 + (v >= 4) for k, v in enumerate(r.ratings) if k % RATED < 4)
    v = figures.validation
    assert v is not None and v.users == USERS and v.covisit_alone is not None
    assert f"{v.covisit_weight:g}" in v.weights


def test_a_replay_lands_every_swipe_and_scores_feeds_without_rated_items(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each user rated 5 of 14 items: 4 are replayed, so exactly 10 are unseen, the held-out
    one among them; a feed of 10 that leaves out what was rated must hold it (HR@10 = 1)."""
    ratings = tiny()
    users, items, values = (x.tolist() for x in (ratings.users, ratings.items, ratings.ratings))
    with fresh_stack(settings) as stack:
        figures = replay(ratings, settings, stack.url, stack.services.feed.state, span_s=3600)
        served_weight = stack.services.feed.state.settings.covisit_weight

    replayed = [k for k in range(len(users)) if (k + 1) % RATED]  # all but each user's last
    expected = sum(2 + (values[k] >= 4) for k in replayed)  # impression, play (, like)
    assert figures.events == expected
    stored = connect(settings).query("SELECT count() FROM events").result_rows[0][0]
    assert stored == expected
    assert figures.users == USERS
    assert figures.swipeloop == HitRate(hr_at_10=1.0, ndcg_at_10=figures.ndcg_at_10)
    assert 0 < figures.ndcg_at_10 <= 1
    # the pre-rank weight was chosen on each user's second-to-last item (a page of 10 of the
    # 11 unseen then), which was streamed afterwards (above: every event is in ClickHouse)
    v = figures.validation
    assert v is not None and v.users == USERS
    assert set(v.weights) == {"1", "3", "10", "30", "100"}
    assert all(0.5 <= w.hr_at_10 <= 1 for w in v.weights.values()), v.weights
    assert v.weights[f"{v.covisit_weight:g}"].ndcg_at_10 == max(
        w.ndcg_at_10 for w in v.weights.values()
    )
    assert served_weight == v.covisit_weight  # the test pages were served with it
    assert 0 <= figures.item_knn.ndcg_at_10 <= figures.item_knn.hr_at_10 <= 1
    recent = figures.recent_item_knn
    assert recent is not None and 0 <= recent.ndcg_at_10 <= recent.hr_at_10 <= 1
    # a replica starting now knows from ClickHouse alone what each phone showed its user
    # (their `impression` events; the scoring feeds were served on top of those), and what
    # was watched after what (here all of it: its topic replay would start now)
    monkeypatch.setattr("api.bootstrap.REPLAY_S", 0)
    restarted = ServingState(settings, connect(settings))
    restarted.bootstrap()
    covisits = CoVisits(CoVisitConfig.of(settings))
    for u in range(USERS):  # a rating of 2 or more is watched past the early-skip mark
        watched: list[int] = []
        for k in replayed:
            if users[k] == u and values[k] >= 2:
                code = restarted.items.get(f"ml-i{items[k]}")
                assert code is not None
                covisits.add(watched, code)
                watched.append(code)
    assert len(restarted.covisits) == len(covisits) > 0
    for code in range(len(restarted.columns)):
        assert restarted.covisits.neighbours(code) == covisits.neighbours(code)
    for u in range(USERS):
        rated = restarted.items.known([f"ml-i{items[k]}" for k in replayed if users[k] == u])
        assert len(rated) == RATED - 1
        assert set(rated.tolist()) <= restarted.user(f"ml-u{u}").seen
