"""Online-embeddings benchmark: learning rate, vector freshness, bounded state, ANN, quality.

    python bench/embeddings.py --quick      # < 60 s; prints one JSON object

1. throughput: `--events` events over 10,000 items (5,000 creators, 2-3 of 200 tags each)
   and 20,000 users are produced straight to the broker, then the embeddings flow drains
   them, each run with its own recovery store and database: with one worker (one learner),
   with two in one process (a user and an item shard each), and as a cluster of two
   processes of one worker (`workers`: "1", "2", "2_processes"). `updates_per_s_per_worker`:
   SGD steps on (user, item / creator / tag) pairs, sampled negatives included, per second
   from the flow's first learned event to its last, one worker; `events_per_s_per_worker`
   the same in events; `cpu_s_per_100k_events`: CPU seconds its processes took per 100,000
   events over the same stretch (on two cores shared with the broker a second process has
   no core of its own: this says what the split costs where it has).
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
   (`..._any_rating`: every later rating). Only ~30 users qualify, so the figure moves by a
   few hundredths with the learner's seed alone: `recall_at_100_by_seed` gives one learner
   and two shards (`models.sharded_mf`, in one process) three seeds each.
6. quality through the flow: the same first 80 % as events (an impression per rating, then
   a like for >= 4, an early skip for <= 2; each movie's genres its tags, its first genre
   its creator) reach a broker in time order at 10,000 a second while the flow runs, with
   one worker and, on a broker of its own, with two; `workers`: recall@100 of the vectors
   each run stored in ClickHouse.
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
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.state import ServingState
from bench.features import _EVENT, flow_and_feeder, on_fresh_broker, produce_events
from bench.ingest import percentile
from dataflows.runner import run, status
from models.learning import cold_user_vectors, table_lookup
from models.online import LearnerConfig, OnlineMF, Swipes
from models.sharded_mf import ShardedMF
from swipeloop import topics
from swipeloop.arrays import Vector, Vectors
from swipeloop.broker import EmbeddedBroker, free_port
from swipeloop.clickhouse import connect, read_vectors
from swipeloop.contracts import EARLIEST, Item, ItemVector, ReceivedEvent, topic_for
from swipeloop.kafka import durable_producer
from swipeloop.metrics import EMBEDDING_EVENTS, EMBEDDING_UPDATES
from swipeloop.migrations import migrate
from swipeloop.settings import Settings

MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
PROBES = 20
WORKERS = (1, 2)


def on_own_tables(settings: Settings, name: str, workers: int, **changes: Any) -> Settings:
    """The same broker; a recovery store and a database of its own, and `workers` workers
    (in this process)."""
    own = settings.with_(
        data_dir=settings.data_dir.parent / name,
        clickhouse_database=name,
        flow_workers=workers,
        **changes,
    )
    migrate(connect(own))
    return own


Reading = tuple[float, float, float]  # (events learned, steps taken, CPU seconds) so far


class Learning(threading.Thread):
    """Samples a flow's counters and CPU time every 20 ms: its rates and CPU per event from
    its first learned event to its last (its steady state, without start-up or the end)."""

    def __init__(self, read: Callable[[], Reading | None]) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self._read = read
        self._first = read() or (0.0, 0.0, 0.0)
        self.samples: list[tuple[float, Reading]] = []

    def run(self) -> None:
        while not self.stop.wait(0.02):
            reading = self._read()
            if reading is not None:
                self.samples.append((time.perf_counter(), reading))

    def figures(self) -> dict[str, float]:
        moving = [(t, r) for t, r in self.samples if r[0] > self._first[0]]
        if len(moving) < 2:
            return {}
        t0, (e0, u0, c0) = moving[0]
        e1 = moving[-1][1][0]
        t1, (_, u1, c1) = next((t, r) for t, r in moving if r[0] == e1)  # its last change
        return {
            "events_per_s": round((e1 - e0) / (t1 - t0)) if t1 > t0 else 0,
            "updates_per_s": round((u1 - u0) / (t1 - t0)) if t1 > t0 else 0,
            "cpu_s_per_100k_events": round((c1 - c0) / max(e1 - e0, 1) * 100_000, 2),
        }


def _total(counter: Any) -> float:
    """A Prometheus counter's value in this process."""
    samples = (s for m in counter.collect() for s in m.samples if s.name.endswith("_total"))
    return float(sum(s.value for s in samples))


def drained(settings: Settings) -> dict[str, float]:
    """Run the embeddings flow in this process until it has read every partition to its end:
    its events and SGD steps per second, and the CPU it took per event (`Learning`)."""
    learning = Learning(
        lambda: (_total(EMBEDDING_EVENTS), _total(EMBEDDING_UPDATES), time.process_time())
    )
    learning.start()
    # one worker: in a thread, as `swipeloop up` runs it; more: Bytewax's threads
    run("embeddings", settings, in_thread=settings.flow_workers == 1, drain=True)
    learning.stop.set()
    learning.join()
    return learning.figures()


def _counted(port: int) -> tuple[float, float]:
    """A flow process's embedding events and steps so far, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
        text = answer.read().decode()
    totals = {"swipeloop_embedding_events_total": 0.0, "swipeloop_embedding_updates_total": 0.0}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in totals:
            totals[name] = float(value)
    return totals["swipeloop_embedding_events_total"], totals["swipeloop_embedding_updates_total"]


def _cpu_s(pid: int) -> float:
    """The CPU seconds a running process has taken (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cluster_drained(settings: Settings, processes: int) -> dict[str, float]:
    """`swipeloop flows run embeddings --drain` as a cluster of `processes` processes of one
    worker, each with a data dir and chdb path of its own (chdb opens a path from one
    process only): their events and steps per second and CPU per event, all together,
    from their /metrics and /proc (`Learning`)."""
    root = settings.data_dir.parent / f"learn_p{processes}"
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    ports = [free_port() for _ in range(processes)]
    envs = [
        {
            **os.environ,
            "SWIPELOOP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
            "SWIPELOOP_BROKER_EPOCH": settings.broker_epoch,
            "SWIPELOOP_DATA_DIR": str(root / f"p{i}"),
            "SWIPELOOP_CLICKHOUSE_URL": f"chdb://{root / f'p{i}' / 'clickhouse'}",
            "SWIPELOOP_CLICKHOUSE_DATABASE": "learn",
            "SWIPELOOP_SEED_ITEMS": "0",
            "SWIPELOOP_METRICS_PORT": str(ports[i]),
            "SWIPELOOP_FLOW_PROCESSES": str(processes),
            "SWIPELOOP_FLOW_PROCESS_ID": str(i),
            "SWIPELOOP_FLOW_ADDRESSES": addresses,
        }
        for i in range(processes)
    ]
    swipeloop = [sys.executable, "-m", "cli.app"]
    for env in envs:
        subprocess.run([*swipeloop, "migrate"], env=env, capture_output=True, check=True)
    flows = [
        subprocess.Popen(
            [*swipeloop, "flows", "run", "embeddings", "--drain"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for env in envs
    ]

    def read() -> Reading | None:
        try:
            counts = [_counted(port) for port in ports]
            cpu = sum(_cpu_s(flow.pid) for flow in flows)
        except OSError:  # not serving yet, or gone
            return None
        return sum(c[0] for c in counts), sum(c[1] for c in counts), cpu

    learning = Learning(read)
    learning.start()
    for flow in flows:
        _, err = flow.communicate()
        if flow.returncode:
            raise RuntimeError(f"a process of the cluster failed: {err.decode()[-2000:]}")
    learning.stop.set()
    learning.join()
    return learning.figures()


def throughput(settings: Settings, n: int) -> dict[str, Any]:
    """The same events drained by one worker, by two in one process, and by a cluster of
    two processes of one worker each."""
    produce_events(settings, n, 10_000, 0.0, random.Random(2))
    runs: dict[str, dict[str, Any]] = {
        str(w): drained(on_own_tables(settings, f"learn_w{w}", w)) for w in WORKERS
    }
    runs["2_processes"] = cluster_drained(settings, 2)
    return {
        "updates_per_s_per_worker": runs["1"]["updates_per_s"],
        "events_per_s_per_worker": runs["1"]["events_per_s"],
        "workers": runs,
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


@dataclass
class MovieLens:
    """Ratings (user, movie, rating, second) split in time: the first 80 % to learn from,
    the rest to score; each movie's genres."""

    train: list[tuple[int, int, float, int]]
    test: list[tuple[int, int, float, int]]
    genres: dict[int, list[str]]


def movielens(path: Path = MOVIELENS) -> MovieLens:
    with (path / "ratings.csv").open() as f:
        rows = [(int(r[0]), int(r[1]), float(r[2]), int(r[3])) for r in list(csv.reader(f))[1:]]
    with (path / "movies.csv").open() as f:
        genres = {int(r[0]): r[2].split("|") for r in list(csv.reader(f))[1:]}
    rows.sort(key=lambda r: (r[3], r[0], r[1]))
    cut = float(np.quantile([r[3] for r in rows], 0.8))
    return MovieLens([r for r in rows if r[3] <= cut], [r for r in rows if r[3] > cut], genres)


Learner = OnlineMF | ShardedMF


def replayed(ml: MovieLens, learner: Learner) -> Learner:
    """The first 80 % through the learner in batches of 1,000 ratings: the impressions,
    then the reactions (>= 4: more like this, <= 2: less)."""
    for at in range(0, len(ml.train), 1_000):
        batch = ml.train[at : at + 1_000]
        n = len(batch)
        tags = [ml.genres.get(m, []) for _, m, _, _ in batch]
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
        learner.learn(Swipes(weights=np.zeros(n), impression=np.ones(n, bool), **columns))
        learner.learn(Swipes(weights=weight, impression=np.zeros(n, bool), **columns))
    if isinstance(learner, ShardedMF):
        learner.publish()  # (the mirror: the cold users' items)
    return learner


def recall(
    ml: MovieLens,
    ids: list[str],
    matrix: Vectors,
    user_vector: Callable[[str], Vector | None],
    k: int = 100,
) -> dict[str, float]:
    """Recall@k of the items ranked by each user's vector, against the most-liked items."""
    index = {item: row for row, item in enumerate(ids)}
    seen: dict[str, set[str]] = {}
    likes: dict[str, int] = {}
    for u, m, r, _ in ml.train:
        seen.setdefault(f"u{u}", set()).add(f"m{m}")
        if r >= 4:
            likes[f"m{m}"] = likes.get(f"m{m}", 0) + 1
    popular = sorted(likes, key=lambda m: -likes[m])
    truth: dict[str, set[str]] = {}
    rated: dict[str, set[str]] = {}  # every later rating, liked or not
    for u, m, r, _ in ml.test:
        rated.setdefault(f"u{u}", set()).add(f"m{m}")
        if r >= 4:
            truth.setdefault(f"u{u}", set()).add(f"m{m}")
    found, baseline, found_all, baseline_all = [], [], [], []
    for user, relevant in truth.items():
        if user not in seen:
            continue  # no history to retrieve from
        vector = user_vector(user)
        if vector is None:
            continue
        scores = matrix @ vector
        scores[[index[m] for m in seen[user] if m in index]] = -np.inf
        top = {ids[j] for j in np.argpartition(-scores, k)[:k]}
        pop = set([m for m in popular if m not in seen[user]][:k])
        found.append(len(top & relevant) / len(relevant))
        baseline.append(len(pop & relevant) / len(relevant))
        found_all.append(len(top & rated[user]) / len(rated[user]))
        baseline_all.append(len(pop & rated[user]) / len(rated[user]))
    return {
        "recall_at_100": round(float(np.mean(found)), 4),
        "popularity_recall_at_100": round(float(np.mean(baseline)), 4),
        "recall_at_100_any_rating": round(float(np.mean(found_all)), 4),
        "popularity_recall_at_100_any_rating": round(float(np.mean(baseline_all)), 4),
        "recall_users": len(found),
    }


def learner_recall(ml: MovieLens, learner: Learner) -> dict[str, float]:
    """Recall@100 of a learner (one, or in shards) after the online pass."""
    replayed(ml, learner)
    if isinstance(learner, ShardedMF):
        ids, matrix = learner.item_vectors()
        return recall(ml, ids, matrix, learner.user_vector)
    mf = learner
    ids, matrix = mf.tables["item"].items()

    def user_vector(user: str) -> Vector | None:
        own = mf.tables["user"].vector(user)
        if own is not None:
            return own
        items = table_lookup(mf.tables["item"])
        cold, has = cold_user_vectors(mf.config.dim, True, items, [mf.pending.get(user, [])])
        return cold[0] if has[0] else None

    return recall(ml, ids, matrix, user_vector)


def movielens_recall() -> dict[str, float]:
    """Recall@100 of one learner (seed 0), positives: rating >= 4."""
    return learner_recall(movielens(), OnlineMF(LearnerConfig(ttl_s=10**10)))


def recall_by_seed(seeds: int) -> dict[str, list[float]]:
    """Recall@100 of one learner and of two shards, a few seeds each: the noise to judge a
    difference by."""
    ml = movielens()
    config = LearnerConfig(ttl_s=10**10)
    return {
        "one_learner": [
            learner_recall(ml, OnlineMF(config, seed))["recall_at_100"] for seed in range(seeds)
        ],
        "two_shards": [
            learner_recall(ml, ShardedMF(config, 2, seed))["recall_at_100"] for seed in range(seeds)
        ],
    }


def produce_movielens(settings: Settings, ml: MovieLens, rate: float) -> int:
    """The first 80 % as the API would have stored it, `rate` events a second: per rating
    an impression, then a like (>= 4) or an early skip (<= 2); movies with their genres as
    tags, their first genre as creator. Times moved forward so the first is in 2000 (the
    earliest a client time may be). The events produced."""
    producer = durable_producer(
        settings, **{"linger.ms": 5, "queue.buffering.max.messages": 1_000_000}
    )
    for movie, genres in ml.genres.items():
        item = Item(
            item_id=f"m{movie}",
            creator_id=genres[0],
            duration_ms=15_000,
            tags=genres[:32],
            created_at=EARLIEST,
        )
        producer.produce(topics.ITEMS, key=item.item_id.encode(), value=msgspec.json.encode(item))
    producer.flush(30)
    shift = (EARLIEST - datetime.fromtimestamp(ml.train[0][3], UTC)) + timedelta(days=1)
    sent = 0
    started = time.perf_counter()
    for seq, (u, m, r, t) in enumerate(ml.train):
        at = datetime.fromtimestamp(t, UTC) + shift
        reaction = [("like", 0)] if r >= 4 else [("skip", 500)] if r <= 2 else []
        for kind, watch_ms in [("impression", 0), *reaction]:
            ev = ReceivedEvent(
                event_id=uuid.UUID(int=sent + 1),
                user_id=f"u{u}",
                item_id=f"m{m}",
                kind=kind,  # type: ignore[arg-type]
                client_ts=at,
                session_id=f"s{u}",
                seq=seq,
                watch_ms=watch_ms,
                received_at=at,
            )
            value = msgspec.json.encode(ev)
            producer.produce(topic_for(kind), key=ev.user_id.encode(), value=value)
            sent += 1
        if seq % 500 == 0:
            time.sleep(max(0.0, started + sent / rate - time.perf_counter()))
            producer.poll(0)
    producer.flush(60)
    return sent


def flow_recall(tmp: Path, rate: float) -> dict[int, dict[str, float]]:
    """The MovieLens replay live through the flow, one worker and two, each on a broker of
    its own that the events reach at `rate` a second (drained from a backlog instead, the
    flow would read the likes' topic far ahead of the impressions' in event time: not what
    a live flow sees). Recall@100 of the vectors each stored in ClickHouse."""
    ml = movielens()
    out = {}
    for workers in WORKERS:
        name = f"ml_w{workers}"
        with EmbeddedBroker(tmp / f"{name}.log") as broker:
            settings = Settings(
                kafka_bootstrap=broker.bootstrap,
                broker_epoch=broker.epoch,
                data_dir=tmp / name,
                clickhouse_url=f"chdb://{tmp / 'clickhouse'}",
                clickhouse_database=name,
                seed_items=0,
                topic_partitions=3,
                flow_workers=workers,
                embedding_ttl_s=10**10,
            )
            topics.ensure_topics(settings)
            migrate(connect(settings))
            stop = threading.Event()
            flow = threading.Thread(
                target=run,
                args=("embeddings", settings, stop),
                kwargs={"in_thread": workers == 1},
                daemon=True,
            )
            flow.start()
            sent = produce_movielens(settings, ml, rate)
            deadline = time.monotonic() + 300
            while sum(status(settings, "embeddings").offsets.values()) < sent:
                if time.monotonic() > deadline or not flow.is_alive():
                    raise RuntimeError(f"the flow ({workers} workers) did not read every event")
                time.sleep(0.2)
            stop.set()  # (its last publication: what it learned to the end)
            flow.join(60)
        client = connect(settings)
        ids, matrix = read_vectors(client, settings.embedding_dim, "item_embeddings", own_only=True)
        users, vectors = read_vectors(client, settings.embedding_dim, "user_embeddings")
        by_user = dict(zip(users, vectors, strict=True))
        quality = recall(ml, ids, matrix, by_user.get)
        out[workers] = {
            "recall_at_100": quality["recall_at_100"],
            "recall_at_100_any_rating": quality["recall_at_100_any_rating"],
            "recall_users": quality["recall_users"],
        }
    return out


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
    results["recall_at_100_by_seed"] = recall_by_seed(1 if args.quick else 3)
    tmp = Path(tempfile.mkdtemp(prefix="swipeloop-bench-"))
    broker, settings = on_fresh_broker(tmp, "learn")
    with broker:
        results.update(throughput(settings, args.events or (100_000 if args.quick else 1_000_000)))
    for workers, figures in flow_recall(tmp, 10_000.0).items():
        results["workers"][str(workers)].update(figures)
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
