"""Message processors: bytes in, a ClickHouse row or a rejection out (pure, no broker)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec

from swipeloop import topics
from swipeloop.contracts import Impression, Item, ReceivedEvent

MAX_MESSAGE_BYTES = 64 * 1024


class Rejected(ValueError):
    """A message that cannot become a row; the text is the reason stored in the DLQ."""


EVENT_COLUMNS = [
    "event_id",
    "user_id",
    "item_id",
    "kind",
    "watch_ms",
    "client_ts",
    "received_at",
    "session_id",
    "seq",
    "request_id",
    "ts_clamped",
    "topic",
    "partition",
    "offset",
]
EVENT_ID = EVENT_COLUMNS.index("event_id")
RECEIVED_AT = EVENT_COLUMNS.index("received_at")
SOURCE_COLUMNS = ["topic", "partition", "offset"]  # where a row came from: exactly-once progress
ITEM_COLUMNS = [
    "item_id",
    "creator_id",
    "duration_ms",
    "tags",
    "sound_id",
    "created_at",
    *SOURCE_COLUMNS,
]
IMPRESSION_COLUMNS = [
    "request_id",
    "user_id",
    "item_id",
    "position",
    "source",
    "model_version",
    "score",
    "features",
    "served_at",
    *SOURCE_COLUMNS,
]
DLQ_COLUMNS = ["reason", "topic", "partition", "offset", "payload", "failed_at"]

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


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is UTC else ts.astimezone(UTC)


def event_row(value: bytes | None, topic: str, partition: int, offset: int) -> list[Any]:
    """An `events` row from one event message."""
    ev: ReceivedEvent = _decode(_event, value)
    return [
        ev.event_id,
        ev.user_id,
        ev.item_id,
        ev.kind,
        ev.watch_ms,
        _utc(ev.client_ts),
        _utc(ev.received_at),
        ev.session_id,
        ev.seq,
        ev.request_id or "",
        ev.ts_clamped,
        topic,
        partition,
        offset,
    ]


def item_row(value: bytes | None, topic: str, partition: int, offset: int) -> list[Any]:
    """An `items` row from one item message."""
    it: Item = _decode(_item, value)
    return [
        it.item_id,
        it.creator_id,
        it.duration_ms,
        it.tags,
        it.sound_id or "",
        _utc(it.created_at),
        topic,
        partition,
        offset,
    ]


def impression_row(value: bytes | None, topic: str, partition: int, offset: int) -> list[Any]:
    """An `impressions` row from one impression message."""
    im: Impression = _decode(_impression, value)
    return [
        im.request_id,
        im.user_id,
        im.item_id,
        im.position,
        im.source,
        im.model_version,
        im.score,
        im.features,
        _utc(im.served_at),
        topic,
        partition,
        offset,
    ]


RowParser = Callable[[bytes | None, str, int, int], list[Any]]


class Route(NamedTuple):
    """Where a topic's messages are stored, how one becomes a row, and the row's month.

    `month_of` names the time column the table is partitioned by month on: an insert that
    spans two months would be two parts, not one atomic write, so the sink splits there.
    """

    table: str
    columns: list[str]
    parse: RowParser
    month_of: str | None = None


ROUTES: dict[str, Route] = {
    topics.EVENTS_ACTIONS: Route("events", EVENT_COLUMNS, event_row, "client_ts"),
    topics.EVENTS_CONTEXT: Route("events", EVENT_COLUMNS, event_row, "client_ts"),
    topics.ITEMS: Route("items", ITEM_COLUMNS, item_row),
    topics.IMPRESSIONS: Route("impressions", IMPRESSION_COLUMNS, impression_row, "served_at"),
}
