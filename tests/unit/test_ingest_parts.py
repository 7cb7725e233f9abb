"""Pure parts of ingest: poll parsing, the dedup window, month runs, clock clamping."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec

from dataflows.ingest import SeenIds, dedup, parse_poll
from dataflows.io.poll_source import Polled
from dataflows.io.rows import TableRows
from dataflows.parse import MAX_MESSAGE_BYTES, millis
from swipeloop import topics
from swipeloop.contracts import Event, ReceivedEvent, Stamper, stamp

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
            (10, received(0), None),
            (11, b"{oops", None),
            (12, b"x" * (MAX_MESSAGE_BYTES + 1), None),
            (13, None, None),
            (14, received(1), None),
            (15, b"", "Broker: corrupt message"),
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
    parsed = parse_poll(Polled("mystery", 0, [(0, received(0), None)]), NOW)
    assert [t.table for t in parsed.tables] == ["dlq"]
    assert parsed.dead[0].reason == "no schema for topic 'mystery'"


def test_dedup_drops_a_retried_event_within_the_window_only() -> None:
    same = uuid.uuid4()
    seen = SeenIds()
    first = parse_poll(Polled(topics.EVENTS_CONTEXT, 0, [(0, received(0, event_id=same), None)]))
    seen, out = dedup(seen, first, window_ms=60_000, max_ids=100)
    assert out.tables[0].offsets == [0]
    retry = parse_poll(
        Polled(
            topics.EVENTS_CONTEXT,
            0,
            [(1, received(0, event_id=same), None), (2, received(1), None)],
        )
    )
    seen, out = dedup(seen, retry, window_ms=60_000, max_ids=100)
    assert out.tables[0].offsets == [2]
    assert seen.dropped == 1
    # Two minutes later the first id has left the 60 s window: it would be stored again.
    later = NOW + timedelta(minutes=2)
    seen, _ = dedup(
        seen,
        parse_poll(Polled(topics.EVENTS_CONTEXT, 0, [(3, received(2, at=later), None)])),
        window_ms=60_000,
        max_ids=100,
    )
    assert same.int not in seen.received_ms


def test_dedup_window_is_capped() -> None:
    seen = SeenIds()
    for off in range(50):
        polled = Polled(topics.EVENTS_CONTEXT, 0, [(off, received(off), None)])
        seen, _ = dedup(seen, parse_poll(polled), window_ms=10**9, max_ids=10)
    assert len(seen.received_ms) == 10


def test_a_window_snapshotted_as_a_plain_dict_keeps_working_and_is_converted() -> None:
    """State from before the window was an OrderedDict: same decisions, converted at the next
    snapshot (Bytewax deep-copies state to snapshot it)."""
    import copy
    from collections import OrderedDict

    old = SeenIds()
    old.received_ms = {i: i for i in range(12)}  # type: ignore[assignment]
    polled = Polled(topics.EVENTS_CONTEXT, 0, [(0, received(0), None)])
    old, out = dedup(old, parse_poll(polled), window_ms=10**15, max_ids=10)
    assert out.tables[0].offsets == [0] and len(old.received_ms) == 10
    assert 0 not in old.received_ms and 2 not in old.received_ms  # the oldest three left
    assert isinstance(copy.deepcopy(old).received_ms, OrderedDict)


def test_runs_split_at_month_boundaries() -> None:
    months = [202601, 202601, 202602, 202601]
    part = TableRows("events", [b"a", b"b", b"c", b"d"], [1, 2, 3, 4], months=months)
    assert [offsets for _, offsets in part.runs()] == [[1, 2], [3], [4]]
    whole = TableRows("items", [b"a", b"b"], [1, 2])
    assert [offsets for _, offsets in whole.runs()] == [[1, 2]]
    tail = part.tail_after(2)
    assert tail is not None and tail.offsets == [3, 4] and tail.months == [202602, 202601]
    assert part.tail_after(4) is None


def phone_event(client_ts: datetime) -> Event:
    return Event(
        event_id=uuid.uuid4(),
        user_id="u",
        item_id="i",
        kind="watch",
        client_ts=client_ts,
        session_id="s",
        seq=4,
        watch_ms=1200,
    )


def test_stamp_clamps_a_client_clock_far_ahead() -> None:
    ev = phone_event(NOW + timedelta(minutes=6))
    stored = stamp(ev, NOW)
    assert stored.ts_clamped and stored.client_ts == NOW and stored.received_at == NOW
    near = msgspec.structs.replace(ev, client_ts=NOW + timedelta(minutes=4))
    assert not stamp(near, NOW).ts_clamped
    assert stamp(near, NOW).client_ts == NOW + timedelta(minutes=4)


def test_stamper_json_is_the_stamped_event() -> None:
    ev = phone_event(NOW - timedelta(seconds=3))
    ahead = msgspec.structs.replace(ev, client_ts=NOW + timedelta(hours=1))
    stamper = Stamper(NOW)
    for each in (ev, ahead):
        fast = msgspec.json.decode(stamper.json(each), type=ReceivedEvent)
        assert fast == stamp(each, NOW)
    assert msgspec.json.decode(stamper.json(ahead), type=ReceivedEvent).ts_clamped


def test_millis_is_exact_and_floors() -> None:
    assert millis(datetime(1970, 1, 1, 0, 0, 1, 999_999, tzinfo=UTC)) == 1999
    assert millis(datetime(2026, 11, 28, tzinfo=UTC)) == 1_795_824_000_000
