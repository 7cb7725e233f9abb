"""Replay benchmark: MovieLens through the real system, next-item HR@10 / NDCG@10 of its feeds
against popularity, item-kNN and recency-weighted item-kNN on the same leave-last-out split.

    python bench/replay.py                        # ../shared/data/ml-latest-small/ratings.csv
    python bench/replay.py --ratings PATH         # any file in that format

It is `swipeloop replay` (a fresh embedded stack: broker, ClickHouse, flows, API, all in this
process) with the time and memory it took. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.stack import fresh_stack
from sim.movielens import read_ratings
from sim.replay import replay
from swipeloop.broker import free_port
from swipeloop.settings import Settings

MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=Path, default=MOVIELENS / "ratings.csv")
    parser.add_argument("--span-hours", type=float, default=24.0)
    args = parser.parse_args()
    began = time.perf_counter()
    ratings = read_ratings(args.ratings)
    with tempfile.TemporaryDirectory(prefix="swipeloop-replay-") as tmp:
        settings = Settings(data_dir=Path(tmp), api_port=free_port(), metrics_port=0)
        with fresh_stack(settings) as stack:
            state = stack.services.feed.state
            figures = replay(ratings, settings, stack.url, state, args.span_hours * 3600)
    out = msgspec.to_builtins(figures)
    out["total_s"] = round(time.perf_counter() - began, 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
