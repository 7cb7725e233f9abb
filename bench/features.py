"""Feature-windows benchmark: throughput per worker, hot-key ratio, freshness, state size.

    python bench/features.py --quick      # < 60 s; prints one JSON object

1. uniform: `--events` events over 10,000 items (5,000 creators, 2-3 tags each) and 20,000
   users, produced straight to the broker (as the API stores them), then the features flow
   (one worker, all features on: item, creator, user, user-creator, user-tag; four windows)
   drains them. `events_per_s_per_worker` is counted from the flow's first counted event to
   its last.
2. hot: the same, with one item taking 50 % of the events. `hotkey_ratio` = hot ÷ uniform.
3. freshness: the flow runs live; the API's own cache (`ServingState` fed by its `Feeder`)
   follows `item-features`. Events for one item are produced at 100/s alongside a background
   stream of 1,000 events/s; each event's freshness is the time from its produce call to the
   moment the cache holds a window that counts it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.feeder import Feeder
from api.state import ServingState
from bench.ingest import CounterSampler, percentile
from dataflows.runner import run, run_in_thread
from models.features.counts import counts_of
from models.features.weights import C
from swipeloop import topics
from swipeloop.broker import EmbeddedBroker
from swipeloop.clickhouse import connect
from swipeloop.contracts import Item, ItemFeatures, topic_for
from swipeloop.kafka import durable_producer
from swipeloop.metrics import FEATURE_EVENTS, FEATURE_STATE_BYTES
from swipeloop.migrations import migrate
from swipeloop.settings import Settings

TAGS = [f"tag{i}" for i in range(200)]
BACKGROUND_RATE = 1_000.0  # events/s around the freshness probe
KINDS = ["impression", "impression", "watch", "skip", "watch", "like", "loop", "share"]
_EVENT = (
    b'{"event_id":"%s","user_id":"u%d","item_id":"i%d","kind":"%s","client_ts":"%s",'
    b'"session_id":"s%d","seq":%d,"watch_ms":%d,"request_id":null,"received_at":"%s",'
    b'"ts_clamped":false}'
)


def state_mb() -> float:
    return round(sum(s.value for m in FEATURE_STATE_BYTES.collect() for s in m.samples) / 2**20, 1)


def produce_items(settings: Settings, n: int, rng: random.Random) -> None:
    producer = durable_producer(settings, **{"linger.ms": 20})
    now = datetime.now(UTC)
    for i in range(n):
        item = Item(
            item_id=f"i{i}",
            creator_id=f"c{i % (n // 2)}",
            duration_ms=rng.choice([8_000, 15_000, 30_000, 60_000]),
            tags=rng.sample(TAGS, rng.randint(2, 3)),
            created_at=now,
        )
        producer.produce(topics.ITEMS, key=item.item_id.encode(), value=msgspec.json.encode(item))
    producer.flush(30)


def produce_events(
    settings: Settings,
    n: int,
    items: int,
    hot: float,
    rng: random.Random,
    seq0: int = 0,
    rate: float = 0.0,
) -> None:
    """Events stamped now (the live case), in arrival order; `rate` > 0 paces them."""
    started = time.perf_counter()
    producer = durable_producer(
        settings, **{"linger.ms": 20, "queue.buffering.max.messages": 1_000_000}
    )
    now = datetime.now(UTC).isoformat().encode()
    stamp_every = 100 if rate else 1000  # paced: stamped within 0.1 s of now, as the API does
    for i in range(seq0, seq0 + n):
        if i % stamp_every == 0:
            now = datetime.now(UTC).isoformat().encode()
        user = rng.randrange(20_000)
        item = 0 if rng.random() < hot else rng.randrange(items)
        kind = KINDS[i % len(KINDS)]
        value = _EVENT % (
            str(uuid.uuid4()).encode(),
            user,
            item,
            kind.encode(),
            now,
            user,
            i,
            rng.choice([500, 3_000, 12_000]),
            now,
        )
        producer.produce(topic_for(kind), key=b"u%d" % user, value=value)
        if i % 20_000 == 0:
            producer.poll(0)
        if rate and i % 100 == 0:
            time.sleep(max(0.0, started + (i - seq0) / rate - time.perf_counter()))
    producer.flush(60)


def on_fresh_broker(tmp: Path, name: str) -> tuple[EmbeddedBroker, Settings]:
    """A broker of its own (what a run reads is only what it produced), its own database,
    topics and the 10,000-item catalog."""
    broker = EmbeddedBroker(tmp / f"{name}.log").start()
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        broker_epoch=broker.epoch,
        data_dir=tmp / name,
        clickhouse_url=f"chdb://{tmp / 'clickhouse'}",
        clickhouse_database=name,
        seed_items=0,
        topic_partitions=3,
    )
    topics.ensure_topics(settings)
    migrate(connect(settings))
    produce_items(settings, 10_000, random.Random(1))
    return broker, settings


def throughput(settings: Settings, n: int, hot: float, seed: int) -> int:
    produce_events(settings, n, 10_000, hot, random.Random(seed), seq0=seed * 10_000_000)
    sampler = CounterSampler(FEATURE_EVENTS)
    sampler.start()
    run("features", settings, in_thread=True, drain=True)
    sampler.stop.set()
    sampler.join()
    return sampler.rate()


@contextmanager
def flow_and_feeder(name: str, settings: Settings, state: ServingState) -> Iterator[None]:
    """The flow `name` running live, and the API's feeder filling `state` from the topics."""
    feeder = Feeder(state, settings)
    feeder.start()
    stop = threading.Event()
    flow = run_in_thread(name, settings, stop, on_error=print)
    try:
        yield
    finally:
        stop.set()
        flow.join(30)
        feeder.stop()


def freshness(settings: Settings, seconds: float) -> dict[str, Any]:
    """Produce events for item `i1` at 100/s; time until the API cache counts each."""
    state = ServingState(settings, connect(settings))
    seen: list[tuple[float, float]] = []  # (when applied, events counted in the 1 h window)
    apply = state.apply_features

    def timed(f: ItemFeatures) -> None:
        apply(f)
        if f.item_id == "i1":
            hour = counts_of(f)[f.window_s.index(3600), C["events"]] if 3600 in f.window_s else 0
            seen.append((time.perf_counter(), float(hour)))

    state.apply_features = timed  # type: ignore[method-assign]
    with flow_and_feeder("features", settings, state):
        time.sleep(3)  # the flow's catalog and consumers up; earlier live windows published
        producer = durable_producer(settings, **{"linger.ms": 0})
        now = datetime.now(UTC).isoformat().encode()
        warm = _EVENT % (str(uuid.uuid4()).encode(), 7, 2, b"like", now, 7, 0, 0, now)
        producer.produce(topic_for("like"), key=b"u7", value=warm)
        producer.flush(10)  # its connection and producer id set up before a probe is timed
        rng = random.Random(3)
        background = threading.Thread(  # a stream the flow keeps up with, around the probe
            target=produce_events,
            args=(settings, int(BACKGROUND_RATE * (seconds + 3)), 10_000, 0.0, rng, 90_000_000),
            kwargs={"rate": BACKGROUND_RATE},
            daemon=True,
        )
        background.start()
        sent: list[float] = []
        counted_before = seen[-1][1] if seen else 0.0
        start = time.perf_counter()
        for k in range(int(100 * seconds)):
            due = start + k / 100
            time.sleep(max(0.0, due - time.perf_counter()))
            now = datetime.now(UTC).isoformat().encode()
            value = _EVENT % (str(uuid.uuid4()).encode(), 7, 1, b"like", now, 7, k, 0, now)
            producer.produce(topic_for("like"), key=b"u7", value=value)
            producer.poll(0)
            sent.append(time.perf_counter())
        producer.flush(10)
        time.sleep(3)
    background.join(30)
    latencies = []
    for k, at in enumerate(sent):
        need = counted_before + k + 1
        visible = next((t for t, n in seen if t >= at and n >= need), None)
        if visible is not None:
            latencies.append((visible - at) * 1000)
    return {
        "freshness_p50_ms": round(percentile(latencies, 0.5), 1),
        "freshness_p99_ms": round(percentile(latencies, 0.99), 1),
        "freshness_events": len(sent),
        "freshness_seen": len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 60 s)")
    parser.add_argument("--events", type=int, default=0, help="events per throughput run")
    args = parser.parse_args()
    events = args.events or (150_000 if args.quick else 1_000_000)
    fresh_s = 8.0 if args.quick else 30.0

    tmp = Path(tempfile.mkdtemp(prefix="swipeloop-bench-"))
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name, hot in (("uniform", 0.0), ("hot", 0.5)):
        broker, settings = on_fresh_broker(tmp, name)
        with broker:
            results[name] = throughput(settings, events, hot, 1 if hot else 2)
        if name == "uniform":
            results["state_mb"] = state_mb()
            results["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    broker, settings = on_fresh_broker(tmp, "fresh")
    with broker:
        fresh = freshness(settings, fresh_s)
    uniform, hot_rate = results["uniform"], results["hot"]
    print(
        json.dumps(
            {
                "events_per_s_per_worker": uniform,
                "hot_events_per_s_per_worker": hot_rate,
                "hotkey_ratio": round(hot_rate / uniform, 3) if uniform else 0.0,
                **fresh,
                "state_mb": results["state_mb"],
                "rss_after_uniform_mb": round(results["rss_mb"], 1),
                "events_per_run": events,
                "seconds": round(time.perf_counter() - started, 1),
                "cpu_count": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
