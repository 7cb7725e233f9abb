"""Analysis queries benchmark: every named query (sql/analysis/) on 1,000,000 events.

    python bench/analysis.py --quick    # each query once; prints one JSON object
    python bench/analysis.py            # each query 3 times: the median and the slowest
    python bench/analysis.py --events N

An embedded ClickHouse engine in a temporary directory gets two days of feeds and what the
users did with them, generated inside ClickHouse as `bench/train.py` does (50,000 items,
20,000 users, ~1.26 events per impression), 5 % of the items re-uploaded in the last two days
(for the new-video funnel), and 1,000 refused messages in the DLQ. Then each query runs the
way `swipeloop sql NAME` runs it (`swipeloop.analysis.run`, its default parameters). Prints
`queries` (seconds and rows per query), `max_query_s`, the data's size and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.train import FEED, generate
from swipeloop import analysis
from swipeloop.clickhouse import connect
from swipeloop.migrations import migrate
from swipeloop.settings import Settings

EVENTS_PER_IMPRESSION = 1.25  # what bench/train.py's engagement makes, about

REUPLOADS_SQL = """
INSERT INTO items (item_id, creator_id, duration_ms, created_at)
SELECT item_id, creator_id, duration_ms, now64(3) - toIntervalSecond(cityHash64(item_id) % 172800)
FROM items FINAL
WHERE cityHash64(item_id) % 20 = 0
"""

DLQ_SQL = """
INSERT INTO dlq (reason, topic, partition, offset, payload, failed_at)
SELECT
    ['Expected `int`, got `str` - at `$.watch_ms`', 'not JSON: unexpected byte',
     'Object missing required field `event_id`', 'unknown kind ''swipe'' - at `$.kind`']
        [1 + number % 4],
    'events.actions',
    number % 4,
    number,
    'garbage',
    now64(3) - toIntervalSecond(number * 60)
FROM numbers(1000)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each query once")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    runs = 1 if args.quick else 3
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="swipeloop-analysis-") as tmp:
        settings = Settings(
            clickhouse_url=f"chdb://{tmp}/clickhouse", clickhouse_database="bench", seed_items=0
        )
        client = connect(settings)
        migrate(client)
        requests = int(args.events / EVENTS_PER_IMPRESSION) // FEED
        generate_s = generate(settings, requests * FEED, 0, requests, args.seed)
        client.command(REUPLOADS_SQL)
        client.command(DLQ_SQL)
        events = int(client.query("SELECT count() FROM events").result_rows[0][0])
        impressions = int(client.query("SELECT count() FROM impressions").result_rows[0][0])
        figures: dict[str, dict[str, float | int]] = {}
        for name, query in analysis.catalogue().items():
            times, rows = [], 0
            for _ in range(runs):
                started = time.perf_counter()
                _, result = analysis.run(client, query, {})
                times.append(time.perf_counter() - started)
                rows = len(result)
            figures[name] = {
                "median_s": round(statistics.median(times), 3),
                "max_s": round(max(times), 3),
                "rows": rows,
            }
            print(f"{name}: {figures[name]}", file=sys.stderr)
    out = {
        "events": events,
        "impressions": impressions,
        "runs_per_query": runs,
        "generate_s": round(generate_s, 1),
        "queries": figures,
        "max_query_s": max(f["max_s"] for f in figures.values()),
        "total_s": round(time.perf_counter() - began, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
