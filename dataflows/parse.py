"""Message processors: bytes in, a ClickHouse row or a rejection out (pure, no broker).

A row is a JSONEachRow line: the message re-encoded from its validated contract (so what is
stored is exactly what was checked) plus the source `topic`, `partition` and `offset`, which
make exactly-once inserts possible. ClickHouse parses the lines itself, much faster than
building Python rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgspec

from swipeloop import topics
from swipeloop.contracts import DeadLetter, Impression, Item, ReceivedEvent, clock_wrong

MAX_MESSAGE_BYTES = 64 * 1024


class Rejected(ValueError):
    """A message that cannot become a row; the text is the reason stored in the DLQ."""


_encoder = msgspec.json.Encoder()
_event = msgspec.json.Decoder(ReceivedEvent)
_item = msgspec.json.Decoder(Item)
_impression = msgspec.json.Decoder(Impression)


def _decode(decoder: msgspec.json.Decoder[Any], value: bytes | None) -> Any:
    if value is None:
        raise Rejected("empty message")
    if len(value) > MAX_MESSAGE_BYTES:
        raise Rejected(f"message of {len(value)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise Rejected(f"invalid message: {exc}") from exc


def stored_events(
    records: list[tuple[int, bytes | None, str | None]],
) -> list[tuple[int, ReceivedEvent]]:
    """The events of a poll (offset, value, client error) with their offsets: exactly those
    the ingest flow stores (what it dead-letters, the streaming flows skip)."""
    out = []
    event = _event.decode
    for offset, value, error in records:
        if error is None and value is not None and len(value) <= MAX_MESSAGE_BYTES:
            try:
                ev = event(value)
            except msgspec.DecodeError:
                continue
            if not clock_wrong(ev.client_ts, ev.received_at):
                out.append((offset, ev))
    return out


def row_line(contract: Any, topic: str, partition: int, offset: int, epoch: str = "") -> bytes:
    """The JSONEachRow line of a validated message and where it came from."""
    body = _encoder.encode(contract)
    source = b',"topic":%s,"partition":%d,"offset":%d,"broker_epoch":%s}' % (
        _encoder.encode(topic),
        partition,
        offset,
        _encoder.encode(epoch),
    )
    return body[:-1] + source


def dlq_line(dead: DeadLetter, epoch: str = "") -> bytes:
    """The `dlq` row of a dead letter (the payload kept as text, undecodable bytes replaced)."""
    return _encoder.encode(
        {
            "reason": dead.reason,
            "topic": dead.topic,
            "partition": dead.partition,
            "offset": dead.offset,
            "broker_epoch": epoch,
            "payload": dead.payload.decode("utf-8", "replace"),
            "failed_at": dead.failed_at,
        }
    )


def month(ts: datetime) -> int:
    """yyyymm of a time in UTC: the monthly partition its row lands in."""
    utc = ts if ts.tzinfo is UTC else ts.astimezone(UTC)
    return utc.year * 100 + utc.month


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def millis(ts: datetime) -> int:
    """Milliseconds since the epoch of an aware time (exact, and twice as fast as via float)."""
    return (ts - _EPOCH) // _MILLISECOND


class Route(NamedTuple):
    """Where a topic's messages are stored and how each is checked.

    `month_of` gives the month a table is partitioned on: an insert spanning two months
    would be two parts, not one atomic write, so the sink splits there. `dedup_key` gives
    (id, receive time in ms) for tables whose rows a client may send twice.
    """

    table: str
    decoder: msgspec.json.Decoder[Any]
    month_of: Callable[[Any], int] | None = None
    dedup_key: Callable[[Any], tuple[int, int]] | None = None
    # why a decoded message cannot be stored (None: it can)
    unstorable: Callable[[Any], str | None] | None = None
    user_of: Callable[[Any], str] | None = None  # whose data a row is (erasures remove it)

    def parse(self, value: bytes | None) -> Any:
        """The validated contract of one message, or `Rejected` with the reason."""
        contract = _decode(self.decoder, value)
        if self.unstorable and (reason := self.unstorable(contract)):
            raise Rejected(reason)
        return contract


def _event_month(ev: ReceivedEvent) -> int:
    return month(ev.client_ts)


def _event_unstorable(ev: ReceivedEvent) -> str | None:
    """An event's client time was clamped by the API that stamped it; one on the broker that
    is still wrong did not come through the API (and may be outside ClickHouse's times)."""
    if clock_wrong(ev.client_ts, ev.received_at):
        return f"client_ts {ev.client_ts.isoformat()} is not a plausible phone clock"
    return None


def _event_key(ev: ReceivedEvent) -> tuple[int, int]:
    return ev.event_id.int, millis(ev.received_at)


def _impression_month(im: Impression) -> int:
    return month(im.served_at)


def _user_of(contract: ReceivedEvent | Impression) -> str:
    return contract.user_id


_EVENTS = Route("events", _event, _event_month, _event_key, _event_unstorable, _user_of)

ROUTES: dict[str, Route] = {
    topics.EVENTS_ACTIONS: _EVENTS,
    topics.EVENTS_CONTEXT: _EVENTS,
    topics.ITEMS: Route("items", _item),
    topics.IMPRESSIONS: Route("impressions", _impression, _impression_month, user_of=_user_of),
}
