"""The single learner's order (models.ordering): the same batches whatever the timing of polls."""

from __future__ import annotations

import pickle
import random
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.embedding_inputs import event_order
from models.ordering import InOrder
from swipeloop.contracts import ReceivedEvent

SOURCES = ["events.context:0", "events.actions:0"]
Record = tuple[int, int]  # (client second, id)


def _key(record: Record) -> Record:
    return record


def _streams(seed: int, n: int) -> dict[str, list[Record]]:
    """Two sources, each in its own (not sorted) order, as a partition holds it."""
    rng = random.Random(seed)
    records = [(rng.randrange(50), k) for k in range(n)]
    return {SOURCES[0]: records[::2], SOURCES[1]: records[1::2]}


def _polled(streams: dict[str, list[Record]], rng: random.Random, batch: int) -> list[Record]:
    """Every record through an InOrder, in polls of random size landing in a random order;
    the clock never pauses for `hold_s`, and the sources end caught up and quiet."""
    order: InOrder[Record] = InOrder(SOURCES, _key, batch, hold_s=1.0, wait_s=5.0)
    at = {name: 0 for name in streams}
    now = 1000.0
    out: list[list[Record]] = []
    while any(at[name] < len(records) for name, records in streams.items()):
        name = rng.choice([n for n in streams if at[n] < len(streams[n])])
        size = rng.randint(1, 7)
        order.add(name, streams[name][at[name] : at[name] + size], None)
        at[name] += size
        now += 0.01
        out.extend(order.take(now))
    for name in streams:  # both caught up: heartbeats, then a pause
        order.add(name, [], now)
    out.extend(order.take(now + 1.0))
    out.extend(order.take(now + 2.0))
    assert order.pending == 0
    return [record for batch in out for record in batch] + [(-1, len(b)) for b in out]


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), timing=st.integers(0, 10_000), batch=st.integers(1, 12))
def test_the_batches_do_not_depend_on_when_each_poll_lands(
    seed: int, timing: int, batch: int
) -> None:
    streams = _streams(seed, 60)
    first = _polled(streams, random.Random(timing), batch)
    again = _polled(streams, random.Random(timing + 1), batch)
    assert first == again  # the same records, in the same order, cut in the same places
    assert sorted(first[:60]) == sorted(streams[SOURCES[0]] + streams[SOURCES[1]])


def test_sorted_sources_come_out_sorted() -> None:
    order: InOrder[Record] = InOrder(SOURCES, _key, 100, hold_s=1.0, wait_s=5.0)
    order.add(SOURCES[0], [(1, 0), (3, 1), (5, 2)], None)
    order.add(SOURCES[1], [(2, 3), (4, 4)], None)
    assert order.take(0.0) == []  # actions ran dry and is not known to be quiet: (5, 2) waits
    order.add(SOURCES[1], [], 0.0)  # caught up and quiet since 0 ...
    assert order.take(0.5) == []  # ... but not for hold_s yet
    order.add(SOURCES[0], [], 0.0)
    assert order.take(1.0) == [[(1, 0), (2, 3), (3, 1), (4, 4), (5, 2)]]  # both done


def test_a_source_not_heard_from_holds_everything_back() -> None:
    order: InOrder[Record] = InOrder(SOURCES, _key, 1, hold_s=1.0, wait_s=5.0)
    order.add(SOURCES[0], [(1, 0), (2, 1)], None)
    assert order.take(100.0) == []
    order.add(SOURCES[1], [], 50.0)  # its first heartbeat: quiet long enough
    assert order.take(100.0) == [[(1, 0)], [(2, 1)]]


def test_a_partial_batch_waits_for_the_end_or_wait_s() -> None:
    order: InOrder[Record] = InOrder(SOURCES[:1], _key, 100, hold_s=1.0, wait_s=5.0)
    order.add(SOURCES[0], [(1, 0)], None)
    assert order.take(0.0) == []
    assert order.take(3.0) == []  # not known to be caught up: more may come
    order.add(SOURCES[0], [], 3.0)
    assert order.take(3.9) == []
    assert order.take(4.0) == [[(1, 0)]]  # caught up and quiet for hold_s: nothing more
    now = 10.0
    for k in range(20):  # a record every half second: the stream never pauses
        order.add(SOURCES[0], [(2, k)], None)
        now += 0.5
        taken = order.take(now)
        if taken:
            assert now - 10.5 == 5.0 and taken == [[(2, j) for j in range(k + 1)]]
            break
    else:
        raise AssertionError("a stream that never pauses was never learned")


def test_the_learner_snapshot_keeps_what_it_has_not_learned() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    events = [
        ReceivedEvent(
            event_id=uuid.UUID(int=k),
            user_id="u",
            item_id="i",
            kind="like",
            session_id="s",
            seq=k,
            client_ts=at,
            received_at=at + timedelta(seconds=k % 3),
        )
        for k in range(6)
    ]
    order: InOrder[ReceivedEvent] = InOrder(SOURCES, event_order, 10, hold_s=1.0, wait_s=5.0)
    order.add(SOURCES[0], events[:4], None)
    order.add(SOURCES[1], events[4:], None)
    assert order.take(0.0) == []  # five merged (context ran dry), one buffered
    back: InOrder[ReceivedEvent] = pickle.loads(pickle.dumps(order))
    back.restart(SOURCES)
    assert back.pending == 6
    assert [e.event_id.int for b in back.drain() for e in b] == [0, 1, 4, 2, 3, 5]
