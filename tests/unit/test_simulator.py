"""The simulator's measures on timelines whose answers are known."""

import json
from datetime import UTC, datetime
from pathlib import Path

from sim.figures import HitRate, ReplayFigures, Summary
from sim.report import render
from sim.simulator import BUCKET_S, Run, Tally, adaptation_lag, minutes_to, summary
from sim.world import POLICIES, Burst, World


def test_adaptation_lag_is_the_time_to_a_sustained_rise_of_the_burst_topic() -> None:
    burst = Burst(topic=1, start_s=100, end_s=200, lift=1.5)
    first = int(100 // BUCKET_S)
    # bucket: [impressions, impressions of the burst topic, watch s]; 5 % before the burst,
    # so a rise is above 10 %: a lone spike (bucket 1) does not count, buckets 3 and 4 do
    timeline: dict[int, list[float]] = {first - 2: [20, 1, 0], first - 1: [20, 1, 0]}
    timeline |= {first: [10, 1, 0]}
    timeline |= {first + 1: [10, 3, 0], first + 2: [10, 1, 0], first + 3: [10, 2, 0]}
    timeline |= {first + 4: [10, 4, 0], first + 5: [10, 3, 0]}
    assert adaptation_lag(timeline, [burst]) == 3 * BUCKET_S
    flat: dict[int, list[float]] = {b: [10, 1, 0] for b in range(first - 2, first + 20)}
    assert adaptation_lag(flat, [burst]) is None  # never followed it
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
    assert figures.watch_s_per_session == 20.0
    assert figures.burst_watch_s_per_session == 30.0
    assert figures.like_rate == 0.2 and figures.early_skip_rate == 0.5
    assert figures.coverage == 0.25 and figures.creator_gini == 0.0


def test_a_report_renders_plots_and_a_summary(tmp_path: Path) -> None:
    world = World.create(2, users=4, videos=10, bursts=[Burst(1, 10, 20, 1.5)])
    (gem,) = world.uploads(2.0)
    run = Run(world, datetime.now(UTC), 0.0, {v.item_id: v for v in world.videos})
    for k, arm in enumerate(POLICIES):
        tally = run.tallies[arm]
        tally.sessions = [10.0 * (k + 1)]
        tally.burst_sessions = [12.0 * (k + 1)]
        tally.plays, tally.likes = 10, k
        tally.timeline = {b: [10, b % 3, 40 + k] for b in range(6)}
        tally.gem_views = {gem.item_id: [30.0, 90.0, 100.0]}
        tally.shown[gem.item_id] = 3
    # as `simulate --out` writes it
    figures = json.loads(json.dumps(summary(run, 0.0, (2,)).flat()))
    assert figures["lift_vs_batch"] == 12 / 24 - 1
    assert figures["batch_watch_s_per_session"] == 20.0
    assert figures["gem_views_by_minute"]["realtime"] == [1, 2]
    assert figures["new_upload_minutes_to_2_views"]["realtime"] == 1.5
    assert figures["gems_reaching_2_views"]["realtime"] == 1
    read = Summary.from_flat(figures)
    assert read.flat() == figures
    # bench/simulate.py keeps the real-time arm's minutes at the key, every arm's beside it
    key = "new_upload_minutes_to_2_views"
    bench = {**figures, f"by_arm_{key}": figures[key], key: figures[key]["realtime"]}
    assert Summary.from_flat(bench) == read
    hit = HitRate(hr_at_10=0.1, ndcg_at_10=0.05)
    replay = ReplayFigures(
        ratings=9,
        users=3,
        events=12,
        replay_s=1.0,
        catch_up_s=1.0,
        swipeloop=hit,
        popularity=hit,
        item_knn=hit,
        hr_at_10=hit.hr_at_10,
        ndcg_at_10=hit.ndcg_at_10,
    )
    written = render(read, tmp_path / "report", replay)
    assert [p.name for p in written] == [
        "engagement.png",
        "adaptation.png",
        "new_uploads.png",
        "report.md",
    ]
    assert all(p.stat().st_size > 1000 for p in written[:3])
    text = written[3].read_text()
    assert "| realtime | 1 | 10.0 | 12.0 | 0.000 |" in text
    assert "Real time over batch during bursts: -50%." in text
    assert "| item_knn | 0.100 | 0.050 |" in text
    assert "| realtime | 3.0 | - | 1 (1.5) |" in text  # (no other upload)
