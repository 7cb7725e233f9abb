"""Online-embeddings benchmark: learning rate, vector freshness, bounded state, ANN, quality.

    python bench/embeddings.py --quick      # < 60 s; prints one JSON object

1. throughput: `--events` events over 10,000 items (5,000 creators, 2-3 of 200 tags each)
   and 20,000 users are produced straight to the broker, then the embeddings flow (one
   worker) drains them. `updates_per_s_per_worker`: SGD steps on (user, item / creator /
   tag) pairs, sampled negatives included, per second from the flow's first learned event
   to its last; `events_per_s_per_worker` the same in events.
2. freshness: the flow runs live next to the API's own caches (`ServingState` fed by its
   `Feeder`) and a background stream of 1,000 events/s. Twenty probe items get a like each
   in turn, ten a second, so each one is liked every 2 s; a probe's freshness is the time
   from its produce call until the API index holds a vector of that item published after
   it (probe items change only when probed, and publications come every second, so the
   first such vector is the one that learned the probe).
3. bounded state (a child process, the learner alone): five rounds of new users and items
   (each id seen six times, event time moving on by twice the TTL each round, so the last
   round's ids expire). `rss_growth_ratio` = RSS after round 5 ÷ RSS after round 1;
   `bytes_per_live_id` = the learner's memory ÷ ids with a vector.
4. ANN: `bench.index.measure` at 1,000,000 items of 64 dims (see bench/index.py).
5. quality: MovieLens ml-latest-small replayed in time order through the learner (the first
   80 % of time), then for every user with positives in the last 20 %: recall@100 of the
   items ranked by the user's vector (items they already rated left out), against the 100
   most liked items of the first 80 % (same exclusion). Relevant: the later ratings >= 4
   (`..._any_rating`: every later rating).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.state import ServingState
from bench.features import _EVENT, flow_and_feeder, on_fresh_broker, produce_events
from bench.ingest import CounterSampler, percentile
from dataflows.runner import run
from models.online import LearnerConfig, OnlineMF, Swipes
from swipeloop.clickhouse import connect
from swipeloop.contracts import ItemVector, topic_for
from swipeloop.kafka import durable_producer
from swipeloop.metrics import EMBEDDING_EVENTS, EMBEDDING_UPDATES
from swipeloop.settings import Settings

MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
PROBES = 20


def throughput(settings: Settings, n: int) -> dict[str, int]:
    produce_events(settings, n, 10_000, 0.0, random.Random(2))
    events, updates = CounterSampler(EMBEDDING_EVENTS), CounterSampler(EMBEDDING_UPDATES)
    events.start()
    updates.start()
    run("embeddings", settings, in_thread=True, drain=True)
    for sampler in (events, updates):
        sampler.stop.set()
        sampler.join()
    return {
        "updates_per_s_per_worker": updates.rate(),
        "events_per_s_per_worker": events.rate(),
    }


def _probe(kind: bytes, user: int, item: str, seq: int) -> bytes:
    now = datetime.now(UTC).isoformat().encode()
    value = _EVENT % (str(seq).zfill(32).encode(), user, 0, kind, now, user, seq, 0, now)
    return value.replace(b'"item_id":"i0"', b'"item_id":"%s"' % item.encode())


def freshness(settings: Settings, seconds: float) -> dict[str, Any]:
    """Probe likes on items only probes touch; time until the API index has learned each."""
    state = ServingState(settings, connect(settings))
    applied: list[tuple[float, str, float]] = []  # (perf time, item, published at: epoch s)
    apply = state.apply_vectors

    def timed(vectors: list[ItemVector], removed: list[str] | None = None) -> None:
        apply(vectors, removed)  # searchable once this returns
        now = time.perf_counter()
        applied.extend(
            (now, v.item_id, v.updated_at.timestamp())
            for v in vectors
            if v.item_id.startswith("probe")
        )

    state.apply_vectors = timed  # type: ignore[method-assign]
    with flow_and_feeder("embeddings", settings, state):
        producer = durable_producer(settings, **{"linger.ms": 0})
        items = [f"probe{k}" for k in range(PROBES)]
        for k in range(settings.embedding_min_count):  # probe users and items get their vectors
            for p, item in enumerate(items):
                producer.produce(
                    topic_for("impression"), value=_probe(b"impression", 900 + p, item, k)
                )
        producer.flush(10)
        deadline = time.monotonic() + 30
        while {i for _, i, _ in applied} < set(items) and time.monotonic() < deadline:
            time.sleep(0.1)
        background = threading.Thread(
            target=produce_events,
            args=(settings, int(1_000 * (seconds + 3)), 10_000, 0.0, random.Random(3), 90_000_000),
            kwargs={"rate": 1_000.0},
            daemon=True,
        )
        background.start()
        sent: list[tuple[str, float, float]] = []  # (item, perf time, epoch s)
        start = time.perf_counter()
        for k in range(int(10 * seconds)):
            time.sleep(max(0.0, start + k / 10 - time.perf_counter()))
            p = k % PROBES
            value = _probe(b"like", 900 + p, items[p], 1_000 + k)
            wall, at = time.time(), time.perf_counter()
            producer.produce(topic_for("like"), value=value)
            producer.poll(0)
            sent.append((items[p], at, wall))
        producer.flush(10)
        time.sleep(3)
    background.join(30)
    latencies = []
    for item, at, wall in sent:
        visible = next((t for t, i, pub in applied if i == item and t >= at and pub >= wall), None)
        if visible is not None:
            latencies.append((visible - at) * 1000)
    return {
        "vector_freshness_p50_ms": round(percentile(latencies, 0.5), 1),
        "vector_freshness_p99_ms": round(percentile(latencies, 0.99), 1),
        "freshness_probes": len(sent),
        "freshness_seen": len(latencies),
    }


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bounded_state(users: int, items: int, rounds: int = 5) -> dict[str, float]:
    """New ids every round, the old ones idle past the TTL: memory must stay flat."""
    ttl = 3_600
    mf = OnlineMF(LearnerConfig(ttl_s=ttl))
    rng = np.random.default_rng(0)
    rss: list[float] = []
    live: list[int] = []
    for r in range(rounds):
        u = [f"r{r}u{k}" for k in range(users)]
        i = [f"r{r}i{k}" for k in range(items)]
        for sighting in range(6):
            order = rng.permutation(users)
            batch_users = [u[k] for k in order]
            batch_items = [i[k % items] for k in order]
            second = 2 * r * ttl + sighting  # the last round idle past the TTL by now
            for at in range(0, users, 5_000):
                n = len(batch_users[at : at + 5_000])
                mf.learn(
                    Swipes(
                        users=batch_users[at : at + 5_000],
                        items=batch_items[at : at + 5_000],
                        creators=[None] * n,
                        weights=rng.choice([0.0, 0.0, 1.0, -0.5], n),
                        impression=np.zeros(n, bool),
                        seconds=np.full(n, second, np.int64),
                    )
                )
                mf.publish()  # as the flow does every second: idle ids expire
        gc.collect()
        rss.append(_rss_mb())
        live.append(mf.live_ids())
    return {
        "rss_growth_ratio": round(rss[-1] / rss[0], 3),
        "rss_mb_per_round": [round(x, 1) for x in rss],  # type: ignore[dict-item]
        "live_ids_per_round": live,  # type: ignore[dict-item]
        "bytes_per_live_id": round(mf.nbytes() / max(1, mf.live_ids()), 1),
        "table_bytes_per_live_id": round(
            sum(t.nbytes() for t in mf.tables.values()) / max(1, mf.live_ids()), 1
        ),
    }


def movielens_recall(path: Path = MOVIELENS, k: int = 100) -> dict[str, float]:
    """Recall@k of the learner's user vectors after an online pass over the first 80 % of
    time, against the most-liked items; positives: rating >= 4."""
    with (path / "ratings.csv").open() as f:
        rows = [(int(r[0]), int(r[1]), float(r[2]), int(r[3])) for r in list(csv.reader(f))[1:]]
    with (path / "movies.csv").open() as f:
        genres = {int(r[0]): r[2].split("|") for r in list(csv.reader(f))[1:]}
    rows.sort(key=lambda r: (r[3], r[0], r[1]))
    cut = float(np.quantile([r[3] for r in rows], 0.8))
    train = [r for r in rows if r[3] <= cut]
    test = [r for r in rows if r[3] > cut]
    mf = OnlineMF(LearnerConfig(ttl_s=10**10))
    for at in range(0, len(train), 1_000):
        batch = train[at : at + 1_000]
        n = len(batch)
        tags = [genres.get(m, []) for _, m, _, _ in batch]
        columns: dict[str, Any] = {
            "users": [f"u{u}" for u, _, _, _ in batch],
            "items": [f"m{m}" for _, m, _, _ in batch],
            "creators": [None] * n,
            "seconds": np.array([t for _, _, _, t in batch], np.int64),
            "tag_event": np.repeat(np.arange(n), [len(g) for g in tags]),
            "tags": [g for gs in tags for g in gs],
        }
        rating = np.array([r for _, _, r, _ in batch])
        weight = np.where(rating >= 4, 1.0, np.where(rating <= 2, -0.5, 0.0))
        mf.learn(Swipes(weights=np.zeros(n), impression=np.ones(n, bool), **columns))
        mf.learn(Swipes(weights=weight, impression=np.zeros(n, bool), **columns))
    ids, matrix = mf.tables["item"].items()
    index = {item: row for row, item in enumerate(ids)}
    seen: dict[str, set[str]] = {}
    likes: dict[str, int] = {}
    for u, m, r, _ in train:
        seen.setdefault(f"u{u}", set()).add(f"m{m}")
        if r >= 4:
            likes[f"m{m}"] = likes.get(f"m{m}", 0) + 1
    popular = sorted(likes, key=lambda m: -likes[m])
    truth: dict[str, set[str]] = {}
    rated: dict[str, set[str]] = {}  # every later rating, liked or not
    for u, m, r, _ in test:
        rated.setdefault(f"u{u}", set()).add(f"m{m}")
        if r >= 4:
            truth.setdefault(f"u{u}", set()).add(f"m{m}")
    recall, baseline, recall_all, baseline_all = [], [], [], []
    for user, relevant in truth.items():
        if user not in seen:
            continue  # no history to retrieve from
        vector = mf.tables["user"].vector(user)
        if vector is None:
            cold, has = mf.cold_user_vectors([mf.pending.get(user, [])])
            if not has[0]:
                continue
            vector = cold[0]
        scores = matrix @ vector
        scores[[index[m] for m in seen[user] if m in index]] = -np.inf
        top = {ids[j] for j in np.argpartition(-scores, k)[:k]}
        pop = set([m for m in popular if m not in seen[user]][:k])
        recall.append(len(top & relevant) / len(relevant))
        baseline.append(len(pop & relevant) / len(relevant))
        recall_all.append(len(top & rated[user]) / len(rated[user]))
        baseline_all.append(len(pop & rated[user]) / len(rated[user]))
    return {
        "recall_at_100": round(float(np.mean(recall)), 4),
        "popularity_recall_at_100": round(float(np.mean(baseline)), 4),
        "recall_at_100_any_rating": round(float(np.mean(recall_all)), 4),
        "popularity_recall_at_100_any_rating": round(float(np.mean(baseline_all)), 4),
        "recall_users": len(recall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 60 s)")
    parser.add_argument("--events", type=int, default=0, help="events of the throughput run")
    parser.add_argument("--state-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.state_child:  # a clean process: its RSS is the learner's
        users = 20_000 if args.quick else 100_000
        print(json.dumps(bounded_state(users, users // 4)))
        return
    started = time.perf_counter()
    results: dict[str, Any] = {}
    child = [sys.executable, __file__, "--state-child", *(["--quick"] if args.quick else [])]
    results.update(json.loads(subprocess.run(child, capture_output=True, check=True).stdout))
    results.update(movielens_recall())
    tmp = Path(tempfile.mkdtemp(prefix="swipeloop-bench-"))
    broker, settings = on_fresh_broker(tmp, "learn")
    with broker:
        results.update(throughput(settings, args.events or (100_000 if args.quick else 1_000_000)))
    broker, settings = on_fresh_broker(tmp, "fresh")
    with broker:
        results.update(freshness(settings, 8.0 if args.quick else 30.0))
    try:
        from bench.index import measure

        ann = measure(1_000_000, 64, 10_000, 50 if args.quick else 200)
        results["faiss_top10k_p50_ms"] = ann.get("faiss_top10k_p50_ms")
        results["faiss_top10k_p99_ms"] = ann.get("faiss_top10k_p99_ms")
        results["faiss_recall_at_10k_vs_flat"] = ann.get("recall_at_10k_vs_flat")
    except ImportError:
        pass
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["cpu_count"] = os.cpu_count()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
