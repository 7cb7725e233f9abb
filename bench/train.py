"""Nightly training benchmark: `swipeloop train`'s work at a given number of impressions.

    python bench/train.py --quick     # < 60 s; 100,000 impressions; prints one JSON object
    python bench/train.py             # 1,000,000 impressions (the issue's target: < 5 min)

Two nights on an embedded ClickHouse. Impressions of 20-item feeds and the engagement that
followed are generated inside ClickHouse (INSERT ... SELECT over `numbers()`, deterministic by
seed): each impression's logged feature row looks like a served one (vector score, windowed
counts and rates, age, length, source), and what the user did (watch fraction, early skip,
loop, like, share, not interested) follows a hidden appeal of those features plus noise;
3 % of impressions lose their events, as phones do. Night one sees the oldest 30 % and
promotes the first model; night two sees everything and is measured: the training-set query,
LightGBM lambdarank on the older 80 % of requests, the evaluation of candidate, production
and popularity on the newest 20 %, and the skew check. Night two runs in a process of its
own, so `peak_rss_mb` is the trainer's alone (the in-process ClickHouse engine included).
The features here are drawn, not computed from the events, so the skew check's mismatch rate
is meaningless; it is timed, not reported.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.features.ranking import FEATURE_NAMES
from swipeloop.clickhouse import connect
from swipeloop.migrations import migrate
from swipeloop.settings import Settings
from training.ranker import train
from training.report import Metrics, TrainingReport

FEED = 20  # impressions per request
ITEMS = 50_000
USERS = 20_000
SPAN_S = 2 * 86_400  # the impressions are served over the last two days
FIRST_NIGHT = 0.3  # share of requests the first (production) model learns from

# u(k): the k-th uniform draw of impression `number`; i(k): of its item
ITEMS_SQL = """
INSERT INTO items (item_id, creator_id, duration_ms, created_at)
SELECT
    concat('b', toString(number)),
    concat('c', toString(number % 2000)),
    toUInt32(5000 + cityHash64({seed:UInt64}, number, 13) % 55000),
    now64(3) - toIntervalSecond({span_s:UInt32} + cityHash64({seed:UInt64}, number, 14) % 172800)
FROM numbers({items:UInt32})
"""

IMPRESSIONS_SQL = """
INSERT INTO impressions (request_id, user_id, item_id, position, source, model_version,
                         score, features, served_at)
WITH
    intDiv(number, {feed:UInt32}) AS request,
    cityHash64({seed:UInt64}, number, 0) % {items:UInt32} AS item,
    (k) -> (cityHash64({seed:UInt64}, number, k) % 1000000) / 1e6 AS u,
    5 + (cityHash64({seed:UInt64}, item, 13) % 55000) / 1000 AS duration_s,
    floor(exp(u(2) * 6)) AS plays_1h,
    floor(plays_1h * u(3) / 6) AS plays_5m,
    0.2 + 0.6 * u(5) AS completion,
    0.1 * u(7) AS like_rate,
    u(14) AS draw
SELECT
    concat('r', toString(request)),
    concat('u', toString(cityHash64({seed:UInt64}, request) % {users:UInt32})),
    concat('b', toString(item)),
    number % {feed:UInt32},
    multiIf(draw < 0.6, 'ann', draw < 0.85, 'trending', 'fresh'),
    'v0',
    0,
    [
        toFloat32(2 * u(1) - 1),                                        -- ann_score
        toFloat32(log1p(plays_1h) + 2 * log1p(plays_5m)),               -- trending
        toFloat32(plays_1h),
        toFloat32(plays_5m),
        toFloat32(plays_1h * (1 + u(4))),                               -- impressions_1h
        toFloat32(completion),
        toFloat32(0.5 * (1 - completion) + 0.1 * u(6)),                 -- early_skip_rate_1h
        toFloat32(like_rate),
        toFloat32(0.02 * u(8)),                                         -- share_rate_1h
        toFloat32(0.1 * u(9)),                                          -- loop_rate_1h
        toFloat32(plays_1h * (5 + 20 * u(10))),                         -- plays_24h
        toFloat32(0.8 * like_rate + 0.02 * u(11)),                      -- like_rate_24h
        toFloat32(48 * u(12)),                                          -- age_hours
        toFloat32(duration_s),
        toFloat32(draw < 0.6),
        toFloat32(draw >= 0.6 AND draw < 0.85),
        toFloat32(draw >= 0.85),
        toFloat32(if(u(15) < 0.3, u(16), 0)),                           -- covisit
        toFloat32(if(u(17) < 0.6, 6 * u(18) - 1, 0)),                   -- tag_affinity
        toFloat32(if(u(19) < 0.2, 3 * u(20), 0)),                       -- creator_affinity
        toFloat32(if(u(21) < 0.1, u(22) - 0.3, 0))                      -- tag_momentum
    ],
    now64(3) - toIntervalMillisecond(
        toUInt64({span_s:UInt32} * 1000 * (1 - request / {requests:UInt32})))
FROM numbers({start:UInt64}, {count:UInt64})
"""

# What each user did: watch fraction from a hidden appeal of the served features + noise.
EVENTS_SQL = """
INSERT INTO events (event_id, user_id, item_id, kind, watch_ms, client_ts, received_at,
                    session_id, seq)
WITH
    (k) -> (cityHash64(request_id, item_id, k) % 1000000) / 1e6 AS u,
    1.5 * features[1] + 1.5 * (features[6] - 0.5) - 1.5 * features[7] + 20 * features[12]
        + 0.15 * log1p(features[11]) - 0.01 * features[13] + features[18]
        + 0.3 * features[19] + 0.2 * features[20]
        + 2.0 * (u(1) - 0.5) AS appeal,
    1 / (1 + exp(-appeal)) AS fraction,
    toUInt32(fraction * features[14] * 1000) AS watched_ms,
    arrayJoin(arrayFilter(x -> x.3, [
        (if(fraction < 0.1, 'skip', 'watch'), watched_ms, true),
        ('loop', toUInt32(0), fraction > 0.9 AND u(2) < 0.3),
        ('like', toUInt32(0), u(3) < 0.3 * fraction * fraction),
        ('share', toUInt32(0), u(4) < 0.05 * fraction),
        ('not_interested', toUInt32(0), u(5) < 0.05 * (1 - fraction))
    ])) AS outcome
SELECT
    generateUUIDv4(outcome),
    user_id,
    item_id,
    outcome.1,
    outcome.2,
    served_at + toIntervalMillisecond(toUInt64(1000 + watched_ms)),
    served_at + toIntervalMillisecond(toUInt64(1500 + watched_ms)),
    concat(user_id, '-', toString(toDate(served_at))),
    0
FROM impressions
WHERE served_at > {since:DateTime64(3)}
    AND u(6) >= 0.03  -- 3 % of impressions lose their events on the way
"""


def generate(settings: Settings, impressions: int, start: int, count: int, seed: int) -> float:
    """Requests [start, start + count) of `impressions` and their engagement; seconds spent."""
    client = connect(settings)
    began = time.perf_counter()
    params = {
        "seed": seed,
        "feed": FEED,
        "items": ITEMS,
        "users": USERS,
        "span_s": SPAN_S,
        "requests": impressions // FEED,
    }
    if start == 0:
        client.command(ITEMS_SQL, parameters=params)
    newest = client.command("SELECT max(served_at) FROM impressions")
    rows = {**params, "start": start * FEED, "count": count * FEED}
    client.command(IMPRESSIONS_SQL, parameters=rows)
    client.command(EVENTS_SQL, parameters={"since": newest})
    return time.perf_counter() - began


def first_night(settings: Settings, impressions: int, seed: int) -> dict[str, Any]:
    """Generate everything, training the production model on the oldest share in between."""
    client = connect(settings)
    migrate(client)
    requests = impressions // FEED
    older = int(requests * FIRST_NIGHT)
    generate_s = generate(settings, impressions, 0, older, seed)
    report = train(client, settings, say=lambda _m: None)
    generate_s += generate(settings, impressions, older, requests - older, seed)
    return {"generate_s": round(generate_s, 1), "first_night": report}


def second_night(settings: Settings) -> tuple[TrainingReport, float, float]:
    """The measured run, its seconds and this process's peak memory (MB)."""
    began = time.perf_counter()
    report = train(connect(settings), settings, say=lambda _m: None)
    total_s = round(time.perf_counter() - began, 3)
    peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return report, total_s, peak_rss_mb


def in_child(target: Any, *args: Any) -> Any:
    """`target(*args)` in a fresh process (chdb opens a data path from one process at a
    time, and the measured run's memory is then its own)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(target, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 impressions (< 60 s)")
    parser.add_argument("--impressions", type=int, help="impressions (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    impressions = args.impressions or (100_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="swipeloop-train-") as tmp:
        settings = Settings(
            clickhouse_url=f"chdb://{tmp}/clickhouse",
            clickhouse_database="bench",
            data_dir=Path(tmp),
            seed_items=0,
        )
        prepared = in_child(first_night, settings, impressions, args.seed)
        report, total_s, peak_rss_mb = in_child(second_night, settings)
    metrics = report.metrics
    production = metrics.production or Metrics(None, None, None)
    out = {
        "impressions": impressions,
        "labelled": report.rows + report.holdout_rows,
        "train_rows": report.rows,
        "holdout_rows": report.holdout_rows,
        "features": len(FEATURE_NAMES),
        "generate_s": prepared["generate_s"],
        "query_s": report.query_s,
        "train_s": report.train_s,
        "eval_s": report.eval_s,
        "skew_s": report.skew_s,
        "total_s": total_s,
        "peak_rss_mb": peak_rss_mb,
        "ndcg_at_10": metrics.candidate.ndcg_at_10,
        "production_ndcg_at_10": production.ndcg_at_10,
        "popularity_ndcg_at_10": metrics.popularity.ndcg_at_10,
        "auc": metrics.candidate.auc,
        "production_auc": production.auc,
        "popularity_auc": metrics.popularity.auc,
        "watch_s_at_10": metrics.candidate.watch_s_at_10,
        "popularity_watch_s_at_10": metrics.popularity.watch_s_at_10,
        "promoted": report.promoted,
        "reason": report.reason,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
