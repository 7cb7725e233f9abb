"""The embedded broker as its topics grow: produce latency and broker CPU, with and without
consumers reading at the tail.

    python bench/broker_growth.py --quick     # < 60 s; prints one JSON object

The soak's p99 kept growing after the features flow's snapshots were made cheap, mostly on
POST /v1/events, which waits for the broker's acks. This isolates the broker: one producer
sends 10-message requests (acks=all, as the API does) one after the other into an 8-partition
topic on a fresh embedded broker; in the `tailing` variant three consumer groups (as the
flows and the feeder) read everything as it comes. Per step of `--step` messages: produce
p50/p99 ms and the broker's CPU cores. Each variant gets a broker of its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.feed import cpu_s
from swipeloop.broker import EmbeddedBroker
from swipeloop.kafka import durable_producer
from swipeloop.settings import Settings

TOPIC = "growth"
EVENT = (
    b'{"event_id":"%08d-0000-4000-8000-000000000000","user_id":"u%d","item_id":"i1",'
    b'"kind":"watch","watch_ms":1234,"client_ts":"2026-11-29T00:00:00Z","session_id":"s",'
    b'"seq":1}'
)


def tail(bootstrap: str, group: str, stop: threading.Event, ready: threading.Event) -> None:
    """Read everything as it comes, as a flow does."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([TOPIC], on_assign=lambda *_: ready.set())
    while not stop.is_set():
        consumer.consume(500, 0.05)
    consumer.close()


def variant(messages: int, step: int, consumers: int) -> list[dict[str, Any]]:
    with EmbeddedBroker() as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 8, 1)])[TOPIC].result(10)
        stop, readers = threading.Event(), []
        for c in range(consumers):
            ready = threading.Event()
            reader = threading.Thread(target=tail, args=(broker.bootstrap, f"g{c}", stop, ready))
            reader.start()
            readers.append((reader, ready))
        for _, ready in readers:
            ready.wait(60)
        producer = durable_producer(Settings(kafka_bootstrap=broker.bootstrap))
        out: list[dict[str, Any]] = []
        latencies: list[float] = []
        cpu0, t0 = cpu_s(broker.pid), time.monotonic()
        for k in range(messages // 10):
            delivered: list[object] = []
            started = time.perf_counter()
            for j in range(10):
                producer.produce(
                    TOPIC,
                    key=b"u%d" % (k % 5000),
                    value=EVENT % (10 * k + j, k % 5000),
                    on_delivery=partial(_delivered, delivered),
                )
            while len(delivered) < 10:
                producer.poll(0.001)
            latencies.append((time.perf_counter() - started) * 1000)
            if (10 * (k + 1)) % step == 0:
                cpu1, t1 = cpu_s(broker.pid), time.monotonic()
                out.append(
                    {
                        "messages": 10 * (k + 1),
                        "produce_p50_ms": round(float(np.percentile(latencies, 50)), 2),
                        "produce_p99_ms": round(float(np.percentile(latencies, 99)), 2),
                        "broker_cores": round((cpu1 - cpu0) / (t1 - t0), 2),
                    }
                )
                latencies, cpu0, t0 = [], cpu1, t1
        stop.set()
        for reader, _ in readers:
            reader.join(10)
        return out


def _delivered(into: list[object], err: object, _message: object) -> None:
    into.append(err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 60 s in all")
    parser.add_argument("--messages", type=int, default=400_000, help="per variant")
    parser.add_argument("--step", type=int, default=50_000, help="messages per figure")
    args = parser.parse_args()
    messages, step = (80_000, 20_000) if args.quick else (args.messages, args.step)
    started = time.monotonic()
    alone = variant(messages, step, consumers=0)
    tailing = variant(messages, step, consumers=3)
    print(
        json.dumps(
            {
                "messages": messages,
                "producing_only": alone,
                "tailing": tailing,
                "produce_p99_growth_tailing": round(
                    tailing[-1]["produce_p99_ms"] / tailing[0]["produce_p99_ms"], 1
                ),
                "broker_cores_growth_tailing": round(
                    tailing[-1]["broker_cores"] / max(tailing[0]["broker_cores"], 0.01), 1
                ),
                "wall_s": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
