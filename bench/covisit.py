"""Co-visitation cost: what a feed replica pays to count the swipes and to score a user's
co-visited candidates (`models.covisit`), on MovieLens replayed as the replay does it.

    python bench/covisit.py          # ../shared/data/ml-latest-small/ratings.csv; < 30 s

Every watched rating (2 or more: a play past the early-skip mark) is added in time order; then
each user's candidates are scored three times, timed one by one. Prints one JSON object:
adds per second, and the p50 / p99 milliseconds of one `scores` call (the feed pays one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.covisit import CoVisitConfig
from sim.movielens import leave_last_out, read_ratings
from sim.tuning import covisits

MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=Path, default=MOVIELENS / "ratings.csv")
    args = parser.parse_args()
    train, _ = leave_last_out(read_ratings(args.ratings))
    began = time.perf_counter()
    model, last = covisits(train, CoVisitConfig())
    built_s = time.perf_counter() - began
    times = []
    for _ in range(3):
        for watched in last.values():
            began = time.perf_counter()
            model.scores(watched)
            times.append(time.perf_counter() - began)
    ms = np.array(times) * 1000
    print(
        json.dumps(
            {
                "ratings": len(train),
                "items_with_neighbours": len(model),
                "adds_per_s": round(len(train) / built_s),
                "scores_p50_ms": round(float(np.percentile(ms, 50)), 3),
                "scores_p99_ms": round(float(np.percentile(ms, 99)), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
