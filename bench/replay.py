"""Replay benchmark: MovieLens through the real system, next-item HR@10 / NDCG@10 of its feeds
against popularity, item-kNN and recency-weighted item-kNN, on two protocols.

    python bench/replay.py                        # ../shared/data/ml-latest-small/ratings.csv
    python bench/replay.py --quick                # a fifth of the users (says so), < 90 s
    python bench/replay.py --ratings PATH         # any file in that format

leave-last-out   each user's last rating is the test, their second-to-last the validation
                 that every choice is made on (sim.tuning, sim.replay); run twice, and
                 `deterministic` says whether both runs gave the same figures (4 decimals)
history split    each user's history cut at 80 %: what precedes the cut replayed, the rating
                 at it the test (validation: the same cut of the replayed part). A global
                 time split leaves 28 of ml-latest-small's 610 users with ratings on both
                 sides of the cut: too few to score

Each run is `swipeloop replay` (a fresh embedded stack: broker, ClickHouse, flows, API, all in
this process). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.stack import fresh_stack
from sim.movielens import Ratings, history_split, leave_last_out, read_ratings
from sim.replay import replay, tuned
from sim.tuning import Split
from swipeloop.broker import free_port
from swipeloop.settings import Settings

MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
QUICK_SHARE = 5  # --quick keeps every fifth user


def run(ratings: Ratings, split: Split, span_s: float, chdb: Path, n: int) -> dict[str, Any]:
    """One replay on a fresh stack (run `n`: its own database on the process's one chdb
    path): its figures, flat where the issue names them."""
    with tempfile.TemporaryDirectory(prefix="swipeloop-replay-") as tmp:
        base = Settings(
            data_dir=Path(tmp),
            clickhouse_url=f"chdb://{chdb}",
            clickhouse_database=f"replay_{n}",
            api_port=free_port(),
            metrics_port=0,
        )
        settings, tuning = tuned(ratings, base, split)
        with fresh_stack(settings) as stack:
            state = stack.services.feed.state
            figures = replay(
                ratings, settings, stack.url, state, span_s, split=split, tuning=tuning
            )
    out: dict[str, Any] = msgspec.to_builtins(figures)
    knn = figures.recent_item_knn
    assert knn is not None
    out["itemknn_recent_hr_at_10"] = knn.hr_at_10
    out["itemknn_recent_ndcg_at_10"] = knn.ndcg_at_10
    out["ratio_hr"] = round(figures.hr_at_10 / knn.hr_at_10, 3)
    out["ratio_ndcg"] = round(figures.ndcg_at_10 / knn.ndcg_at_10, 3)
    return out


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two runs' figures equal to the fourth decimal."""
    keys = ("hr_at_10", "ndcg_at_10")
    return all(round(a[k], 4) == round(b[k], 4) for k in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=Path, default=MOVIELENS / "ratings.csv")
    parser.add_argument("--span-hours", type=float, default=24.0)
    parser.add_argument("--quick", action="store_true", help="every fifth user only")
    args = parser.parse_args()
    began = time.perf_counter()
    ratings = read_ratings(args.ratings)
    if args.quick:
        ratings = ratings.take(np.isin(ratings.users, np.unique(ratings.users)[::QUICK_SHARE]))
    span_s = args.span_hours * 3600
    with tempfile.TemporaryDirectory(prefix="swipeloop-replay-chdb-") as chdb:
        first = run(ratings, leave_last_out, span_s, Path(chdb), 1)
        second = run(ratings, leave_last_out, span_s, Path(chdb), 2)
        later = run(ratings, history_split, span_s, Path(chdb), 3)
    out = {
        **first,
        "sample": f"every {QUICK_SHARE}th user" if args.quick else "all users",
        "deterministic": same(first, second),
        "second_run": {k: second[k] for k in ("hr_at_10", "ndcg_at_10")},
        "history_split": {
            k: later[k]
            for k in (
                "users",
                "hr_at_10",
                "ndcg_at_10",
                "itemknn_recent_hr_at_10",
                "itemknn_recent_ndcg_at_10",
                "ratio_hr",
                "ratio_ndcg",
                "validation",
            )
        },
        "total_s": round(time.perf_counter() - began, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
