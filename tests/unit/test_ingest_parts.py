"""Pure parts of ingest: poll parsing, the dedup window, month runs, clock clamping."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec

from dataflows.ingest import SeenIds, dedup_events, parse_poll
from dataflows.io import Polled, Record, TableRows
from dataflows.parse import MAX_MESSAGE_BYTES
from swipeloop import topics
from swipeloop.contracts import Event, ReceivedEvent, stamp

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def received(seq: int, at: datetime = NOW, event_id: uuid.UUID | None = None) -> bytes:
    return msgspec.json.encode(
        ReceivedEvent(
            event_id=event_id or uuid.uuid4(),
            user_id="u1",
            item_id="i1",
            kind="watch",
            client_ts=at,
            session_id="s1",
            seq=seq,
            watch_ms=1000,
            received_at=at,
        )
    )


def test_parse_poll_splits_rows_and_dead_letters_with_offsets() -> None:
    polled = Polled(
        topics.EVENTS_CONTEXT,
        2,
        [
            Record(10, received(0)),
            Record(11, b"{oops"),
            Record(12, b"x" * (MAX_MESSAGE_BYTES + 1)),
            Record(13, None),
            Record(14, received(1)),
            Record(15, b"", error="Broker: corrupt message"),
        ],
    )
    parsed = parse_poll(polled, NOW)
    events, dlq = parsed.tables
    assert (events.table, events.offsets) == ("events", [10, 14])
    assert dlq.table == "dlq"
    assert [d.offset for d in parsed.dead] == [11, 12, 13, 15]
    reasons = [d.reason for d in parsed.dead]
    assert reasons[0].startswith("invalid message")
    assert "exceeds" in reasons[1]
    assert reasons[2] == "empty message"
    assert reasons[3] == "Broker: corrupt message"
    assert all(d.topic == topics.EVENTS_CONTEXT and d.partition == 2 for d in parsed.dead)
    assert parsed.source == "events.context:2"


def test_parse_poll_of_unknown_topic_is_all_dead() -> None:
    parsed = parse_poll(Polled("mystery", 0, [Record(0, received(0))]), NOW)
    assert [t.table for t in parsed.tables] == ["dlq"]
    assert parsed.dead[0].reason == "no schema for topic 'mystery'"


def test_dedup_drops_a_retried_event_within_the_window_only() -> None:
    same = uuid.uuid4()
    seen = SeenIds()
    first = parse_poll(Polled(topics.EVENTS_CONTEXT, 0, [Record(0, received(0, event_id=same))]))
    seen, out = dedup_events(seen, first, window_ms=60_000, max_ids=100)
    assert len(out.tables[0].rows) == 1
    retry = parse_poll(
        Polled(
            topics.EVENTS_CONTEXT,
            0,
            [Record(1, received(0, event_id=same)), Record(2, received(1))],
        )
    )
    seen, out = dedup_events(seen, retry, window_ms=60_000, max_ids=100)
    assert out.tables[0].offsets == [2]
    assert seen.dropped == 1
    # Two minutes later the first id has left the 60 s window: it would be stored again.
    later = NOW + timedelta(minutes=2)
    seen, _ = dedup_events(
        seen,
        parse_poll(Polled(topics.EVENTS_CONTEXT, 0, [Record(3, received(2, at=later))])),
        window_ms=60_000,
        max_ids=100,
    )
    assert same.bytes not in seen.received_ms


def test_dedup_window_is_capped() -> None:
    seen = SeenIds()
    for off in range(50):
        polled = Polled(topics.EVENTS_CONTEXT, 0, [Record(off, received(off))])
        seen, _ = dedup_events(seen, parse_poll(polled), window_ms=10**9, max_ids=10)
    assert len(seen.received_ms) == 10


def test_runs_split_at_month_boundaries() -> None:
    jan, feb = datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    part = TableRows("events", ["ts"], [[jan], [jan], [feb], [jan]], [1, 2, 3, 4], month_col=0)
    assert [offsets for _, offsets in part.runs()] == [[1, 2], [3], [4]]
    whole = TableRows("items", ["ts"], [[jan], [feb]], [1, 2])
    assert [offsets for _, offsets in whole.runs()] == [[1, 2]]


def test_stamp_clamps_a_client_clock_far_ahead() -> None:
    ev = Event(
        event_id=uuid.uuid4(),
        user_id="u",
        item_id="i",
        kind="like",
        client_ts=NOW + timedelta(minutes=6),
        session_id="s",
        seq=0,
    )
    stored = stamp(ev, NOW)
    assert stored.ts_clamped and stored.client_ts == NOW and stored.received_at == NOW
    near = msgspec.structs.replace(ev, client_ts=NOW + timedelta(minutes=4))
    assert not stamp(near, NOW).ts_clamped
    assert stamp(near, NOW).client_ts == NOW + timedelta(minutes=4)
