"""Ingest against the real parts: Tansu, chdb, the Bytewax flow (in a thread or its own process).

What must hold: every acknowledged event lands in ClickHouse exactly once, through kill -9 of
the flow, a frozen broker, a ClickHouse outage and poison messages.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from models.features.ranking import FEATURE_NAMES
from swipeloop import topics
from swipeloop.clickhouse import connect
from swipeloop.contracts import EventKind, topic_for
from swipeloop.kafka import durable_producer
from swipeloop.metrics import SESSION_GAP_EVENTS, refresh_session_gaps
from swipeloop.settings import Settings
from tests.conftest import scalar, wait_until
from tests.support.ingest_events import event
from training.ranker import training_set

pytestmark = pytest.mark.integration


def test_seq_gaps_are_recorded_and_a_lost_watch_is_no_skip(
    live: Settings, ingest_thread: threading.Thread
) -> None:
    producer = durable_producer(live)
    # Session s-ann delivers seq 0, 1, 2, 5, 6 across both topics (3 and 4 were lost);
    # session s-ben delivers 0..3 in a shuffled order: no gap.
    sent: list[tuple[str, int, EventKind]] = [
        ("ann", q, "like" if q == 1 else "watch") for q in (0, 1, 2, 5, 6)
    ]
    sent += [("ben", q, "watch") for q in (2, 0, 3, 1)]
    for user, seq, kind in sent:
        ev = event(user, seq, kind)
        producer.produce(topic_for(kind), key=user.encode(), value=msgspec.json.encode(ev))
    assert producer.flush(10) == 0
    client = connect(live)
    wait_until(lambda: scalar(client, "SELECT count() FROM events") >= len(sent), what="events")
    gaps = client.query(
        "SELECT user_id, missing, missing_seqs FROM session_gaps ORDER BY user_id"
    ).result_rows
    assert gaps == [("ann", 3 - 1, [3, 4])]
    assert refresh_session_gaps(client) == (1, 2)
    assert SESSION_GAP_EVENTS._value.get() == 2

    # Impressions of both users' items: ann's item i7 has no outcome event at all (lost with
    # seq 3 or 4): it must not become a negative training row; i1 (a like) is a positive.
    served = datetime.now(UTC) - timedelta(minutes=1)  # served before the swipes
    n = len(FEATURE_NAMES)
    rows = [
        ["r1", "ann", "i1", 0, "trending", "v0", 0.5, [0.0] * n, served],
        ["r1", "ann", "i7", 1, "trending", "v0", 0.4, [0.0] * n, served],
    ]
    columns = ["request_id", "user_id", "item_id", "position", "source", "model_version"]
    client.insert("impressions", rows, column_names=[*columns, "score", "features", "served_at"])
    assert training_set(client, live).labels.tolist() == [1]


def test_offsets_of_an_earlier_broker_run_are_not_progress(
    live: Settings, ingest_thread: threading.Thread
) -> None:
    # `swipeloop up` restarted: ClickHouse holds rows at high offsets from the previous
    # (memory-only) broker, whose offsets restart at 0. New messages must still land.
    client = connect(live)
    old = [
        f'{{"event_id":"{uuid.uuid4()}","user_id":"u","item_id":"i","kind":"watch",'
        f'"client_ts":"2026-11-01T00:00:00Z","received_at":"2026-11-01T00:00:00Z",'
        f'"session_id":"s","seq":0,"topic":"{topics.EVENTS_CONTEXT}","partition":{p},'
        f'"offset":100000,"broker_epoch":"an-earlier-run"}}'
        for p in range(3)
    ]
    client.raw_insert(
        "events",
        insert_block="\n".join(old),
        fmt="JSONEachRow",
        settings={"date_time_input_format": "best_effort"},
    )
    producer = durable_producer(live)
    ids = set()
    for i in range(30):
        ev = event(f"u{i}", i)
        ids.add(str(ev.event_id))
        producer.produce(topic_for(ev.kind), key=ev.user_id.encode(), value=msgspec.json.encode(ev))
    assert producer.flush(10) == 0
    wait_until(
        lambda: (
            scalar(client, "SELECT count() FROM events WHERE broker_epoch != 'an-earlier-run'")
            >= 30
        ),
        what="the new run's events",
    )
    rows = client.query(
        "SELECT toString(event_id) FROM events WHERE broker_epoch = {e:String}",
        parameters={"e": live.broker_epoch},
    ).result_rows
    assert {r[0] for r in rows} == ids
