"""Ingest under faults, on the real parts: every acknowledged event lands in ClickHouse exactly
once through poison messages, a frozen and a vanished broker, a ClickHouse outage, and the
flow killed -9 ten times mid-stream."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from bytewax.testing import run_main
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError
from confluent_kafka import KafkaError, Message

from cli.stack import Stack
from dataflows import ingest
from dataflows.runner import recovery_config
from swipeloop import topics
from swipeloop.broker import EmbeddedBroker
from swipeloop.clickhouse import connect
from swipeloop.contracts import topic_for
from swipeloop.kafka import durable_producer
from swipeloop.settings import Settings
from tests.conftest import drain, json_of, role_env, scalar, swipeloop_process, wait_until
from tests.support.flow_processes import kill_9, settled, started
from tests.support.ingest_events import api_event, event

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_poison_goes_to_dlq_and_good_messages_land_once(
    live: Settings, ingest_thread: threading.Thread
) -> None:
    producer = durable_producer(live, **{"linger.ms": 20, "queue.buffering.max.messages": 200_000})
    good = msgspec.json.decode(msgspec.json.encode(event("u0", 0)))
    poison = [
        b"{not json",
        random.Random(7).randbytes(300),  # random bytes
        b'{"event_id": "not-a-uuid"}',
        b'{"event_id": "%s", "user_id": "", "kind": "watch"}' % str(uuid.uuid4()).encode(),
        msgspec.json.encode({**good, "user_id": 5, "seq": "one"}),  # wrong types
        msgspec.json.encode({**good, "schema_version": 2}),  # a schema this code does not know
        msgspec.json.encode({**good, "client_ts": "0265-01-01T00:00:00Z"}),  # no phone's clock
        b"x" * (64 * 1024 + 1),  # huge
        b"",
    ]
    good_ids: set[str] = set()
    bad = 0
    for i in range(101_000):
        if i % 101 == 50:  # 1,000 poison messages spread through the stream
            value = poison[bad % len(poison)]
            producer.produce(topics.EVENTS_CONTEXT, key=f"u{i % 97}".encode(), value=value)
            bad += 1
            continue
        ev = event(f"u{i % 97}", i)
        good_ids.add(str(ev.event_id))
        producer.produce(topic_for(ev.kind), key=ev.user_id.encode(), value=msgspec.json.encode(ev))
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    assert bad == 1000

    client = connect(live)
    wait_until(
        lambda: (
            scalar(client, "SELECT count() FROM events") >= len(good_ids)
            and scalar(client, "SELECT count() FROM dlq") >= bad
        ),
        timeout_s=120,
        what="100,000 events and 1,000 dead letters",
    )
    assert ingest_thread.is_alive(), "the flow must keep running past poison"
    assert scalar(client, "SELECT count() FROM events") == 100_000
    stored = {str(r[0]) for r in client.query("SELECT event_id FROM events").result_rows}
    assert stored == good_ids
    dead = client.query("SELECT reason, topic, partition, offset FROM dlq").result_rows
    assert len(dead) == 1000
    assert all(reason for reason, *_ in dead)
    assert len({(t, p, o) for _, t, p, o in dead}) == 1000, "each poison message once"
    reasons = " ".join(r for r, *_ in dead)
    for why in ("exceeds", "invalid message", "unknown field", "Expected `str`", "plausible"):
        assert why in reasons, why


def test_retried_batch_and_frozen_broker(live: Settings, broker: EmbeddedBroker) -> None:
    with Stack(live, schedule_training=False) as stack:
        stack.serve_in_thread()
        http = httpx.Client(base_url=stack.url, timeout=10)
        first = {"events": [api_event("alice", s) for s in range(10)]}
        assert http.post("/v1/events", json=first).status_code == 202
        assert http.post("/v1/events", json=first).status_code == 202  # a client retry

        # Limits: whole batch refused, with where and why.
        too_many = {"events": [api_event("zed", s) for s in range(live.max_batch_events + 1)]}
        assert http.post("/v1/events", json=too_many).status_code == 413
        huge = {"events": [api_event("zed", 0, request_id="x" * (live.max_body_bytes + 1))]}
        assert http.post("/v1/events", json=huge).status_code == 413
        bad = {"events": [api_event("zed", 0), api_event("zed", 1, kind="teleport")]}
        refused_bad = http.post("/v1/events", json=bad)
        assert refused_bad.status_code == 422
        assert "$.events[1].kind" in refused_bad.text

        # A future client clock, or one reset to 1970, is clamped and flagged.
        ahead = datetime.now(UTC) + timedelta(hours=2)
        skewed = api_event("bob", 0, client_ts=ahead.isoformat())
        reset = api_event("bob", 1, client_ts="1970-01-01T00:00:07+00:00")
        assert http.post("/v1/events", json={"events": [skewed, reset]}).status_code == 202

        broker.pause()
        second = {"events": [api_event("carol", s) for s in range(10)]}
        started = time.monotonic()
        refused = http.post("/v1/events", json=second)
        waited = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert refused.headers.get("retry-after")
        assert waited < live.ack_timeout_s + 1.5

        outcome: list[int] = []

        def retry_until_accepted() -> None:
            for _ in range(60):
                status = http.post("/v1/events", json=second).status_code
                outcome.append(status)
                if status == 202:
                    return
                time.sleep(0.5)  # the scenario: a phone retrying twice a second

        retrier = threading.Thread(target=retry_until_accepted)
        retrier.start()
        wait_until(lambda: len(outcome) >= 2, 30, "the phone's retries refused while frozen")
        broker.resume()
        retrier.join(timeout=60)
        assert outcome[-1] == 202 and set(outcome[:-1]) == {503}, outcome

        client = connect(live)
        wait_until(
            lambda: scalar(client, "SELECT uniqExact(event_id) FROM events") >= 22,
            what="all 22 distinct events",
        )
        wait_until(settled(live, "ingest"), 30, "ingest to read all that was sent")
        assert scalar(client, "SELECT count() FROM events") == 22
        assert scalar(client, "SELECT uniqExact(event_id) FROM events") == 22
        clamped = client.query(
            "SELECT ts_clamped, client_ts = received_at FROM events WHERE user_id = 'bob'"
        ).result_rows
        assert clamped == [(True, True), (True, True)]

        broker.stop()  # gone for good: still a bounded 503, never a 202
        started = time.monotonic()
        gone = http.post("/v1/events", json={"events": [api_event("dave", 0)]})
        assert gone.status_code == 503
        assert time.monotonic() - started < live.ack_timeout_s + 1.5


class _FlakyClient:
    """A real chdb client whose inserts fail while `down` is set, as if the server were gone."""

    def __init__(self, client: Client, down: threading.Event) -> None:
        self._client, self._down = client, down
        self.refused = 0

    def _refuse_while_down(self) -> None:
        if self._down.is_set():
            self.refused += 1
            raise OperationalError("connection refused (ClickHouse is down in this test)")

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        self._refuse_while_down()
        return self._client.insert(*args, **kwargs)

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        self._refuse_while_down()
        return self._client.raw_insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_clickhouse_outage_backs_off_and_catches_up(live: Settings) -> None:
    down, stop = threading.Event(), threading.Event()
    flaky: list[_FlakyClient] = []

    def connect_flaky(s: Settings) -> Any:
        flaky.append(_FlakyClient(connect(s), down))
        return flaky[-1]

    down.set()
    flow = ingest.build_flow(live, stop, connect_clickhouse=connect_flaky)
    config = recovery_config(live, "ingest")
    thread = threading.Thread(
        target=run_main,
        args=(flow,),
        kwargs={"epoch_interval": timedelta(seconds=0.5), "recovery_config": config},
    )
    thread.start()
    try:
        producer = durable_producer(live)
        ids = set()
        for i in range(2000):
            ev = event(f"u{i % 13}", i)
            ids.add(str(ev.event_id))
            producer.produce(
                topic_for(ev.kind), key=ev.user_id.encode(), value=msgspec.json.encode(ev)
            )
        assert producer.flush(10) == 0
        client = connect(live)
        wait_until(lambda: sum(f.refused for f in flaky) >= 3, what="inserts refused and retried")
        assert scalar(client, "SELECT count() FROM events") == 0
        down.clear()
        wait_until(lambda: scalar(client, "SELECT count() FROM events") >= 2000, what="catch-up")
        wait_until(settled(live, "ingest"), 30, "ingest to read all that was sent")
        assert scalar(client, "SELECT count() FROM events") == 2000
        stored = {str(r[0]) for r in client.query("SELECT event_id FROM events").result_rows}
        assert stored == ids
    finally:
        stop.set()
        thread.join(timeout=30)


def test_kill_9_the_flow_ten_times_loses_and_repeats_nothing(
    live: Settings, tmp_path: Path
) -> None:
    # The flow runs as its own process on its own chdb path (chdb: one path per process).
    env = role_env(live, tmp_path / "role", "killed")
    migrate_proc = swipeloop_process("migrate", env=env)
    assert migrate_proc.wait(60) == 0

    acked: set[str] = set()
    failed: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        producer = durable_producer(live)

        def delivered(err: KafkaError | None, msg: Message) -> None:
            ev_id = json.loads(msg.value() or b"{}")["event_id"]
            if err is None:
                acked.add(ev_id)
            else:
                failed.append(ev_id)

        seq = 0
        while not stop.is_set():
            for _ in range(50):  # ~2,500 events/s
                ev = event(f"u{seq % 31}", seq, kind=random.choice(["watch", "like", "skip"]))
                producer.produce(
                    topic_for(ev.kind),
                    key=ev.user_id.encode(),
                    value=msgspec.json.encode(ev),
                    on_delivery=delivered,
                )
                seq += 1
            producer.poll(0)
            time.sleep(0.02)  # the scenario: a steady stream while the flow is killed
        assert producer.flush(30) == 0

    producer_thread = threading.Thread(target=produce)
    producer_thread.start()
    rng = random.Random(7)
    skipped = 0  # replays the sink found already in ClickHouse (a kill between insert and snapshot)
    try:
        for _ in range(10):
            flow = started("ingest", env)
            time.sleep(rng.uniform(0.5, 3.0))  # the scenario: killed at a random point
            skipped += kill_9(flow).count(b"the replayed ones in between are skipped")
    finally:
        stop.set()
        producer_thread.join(timeout=60)
    assert not failed

    drain("ingest", env)
    counts = dict(json_of(_READ_IDS, env))
    assert len(acked) > 10_000
    assert set(counts) == acked, (len(set(counts) - acked), len(acked - set(counts)))
    assert max(counts.values()) == 1, "an event was stored twice"
    print(f"kill -9 x10: {len(acked)} events, {skipped} resumes found ClickHouse ahead")


_READ_IDS = """
import json
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
sql = "SELECT toString(event_id), count() FROM events GROUP BY event_id"
rows = connect(Settings.from_env()).query(sql).result_rows
print(json.dumps([[r[0], int(r[1])] for r in rows]))
"""
