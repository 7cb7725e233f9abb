"""Item features: sliding-window engagement per item, to ClickHouse and the `item-features` topic.

read ─▶ decode ─▶ by_item ─▶ attach_duration ─▶ window_item_stats ─▶ to_features
                                                                      ├─▶ to_clickhouse
                                                                      └─▶ to_topic
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
import bytewax.operators.windowing as win
import msgspec
from bytewax.connectors.kafka import KafkaError
from bytewax.dataflow import Dataflow, Stream

from dataflows.io import ClickHouseSink, Message, Rows, kafka_input, kafka_output, to_kafka
from models.features import ItemStats, add_event, item_features, merge_stats
from swipeloop import topics
from swipeloop.contracts import Item, ItemFeatures, ReceivedEvent
from swipeloop.settings import Settings

log = logging.getLogger(__name__)
ALIGN_TO = datetime(2020, 1, 1, tzinfo=UTC)
FEATURE_COLUMNS = [
    "item_id",
    "window_s",
    "window_end",
    "impressions",
    "views",
    "likes",
    "completion",
]

_events = msgspec.json.Decoder(ReceivedEvent)
_items = msgspec.json.Decoder(Item)


@dataclass(frozen=True)
class Seen:
    """One event of an item, with the item's duration when the catalog knows it."""

    kind: str
    watch_ms: int
    duration_ms: int | None
    ts: datetime


def decode(msg: Message | KafkaError[Any, Any]) -> ReceivedEvent | Item | None:
    """An event or an item; malformed messages are the ingest flow's to dead-letter."""
    if isinstance(msg, KafkaError):
        return None
    try:
        if msg.topic == topics.ITEMS:
            item: Item = _items.decode(msg.value or b"")
            return item
        event: ReceivedEvent = _events.decode(msg.value or b"")
        return event
    except msgspec.DecodeError:
        return None


def attach_duration(
    duration: int | None, value: ReceivedEvent | Item
) -> tuple[int | None, list[Seen]]:
    """Remember each item's duration; annotate its events with it."""
    if isinstance(value, Item):
        return value.duration_ms, []
    return duration, [Seen(value.kind, value.watch_ms, duration, value.client_ts)]


def build_flow(settings: Settings, stop: threading.Event | None = None) -> Dataflow:
    """The item-features flow, wired to the settings' broker and ClickHouse."""
    window = timedelta(seconds=settings.feature_window_s)
    hop = timedelta(seconds=settings.feature_hop_s)
    flow = Dataflow("item_features")
    source = [topics.ITEMS, topics.EVENTS_CONTEXT, topics.EVENTS_ACTIONS]
    msgs = op.input("read", flow, kafka_input(settings, source, stop))
    decoded: Stream[ReceivedEvent | Item] = op.filter_map("decode", msgs, decode)
    # (item_id, ReceivedEvent | Item)
    keyed = op.key_on("by_item", decoded, lambda v: v.item_id)
    # (item_id, Seen)
    seen = op.stateful_flat_map("attach_duration", keyed, attach_duration)
    clock: win.EventClock[Seen] = win.EventClock(
        lambda s: s.ts, wait_for_system_duration=timedelta(seconds=settings.feature_lateness_s)
    )
    windower = win.SlidingWindower(length=window, offset=hop, align_to=ALIGN_TO)
    # (item_id, (window_id, ItemStats))
    stats = win.fold_window(
        "window_item_stats",
        seen,
        clock,
        windower,
        ItemStats,
        lambda s, e: add_event(s, e.kind, e.watch_ms, e.duration_ms),
        merge_stats,
    )
    op.inspect(
        "late_events", stats.late, lambda _step, kv: log.debug("late event for item %s", kv[0])
    )

    def to_features(kv: tuple[str, tuple[int, ItemStats]]) -> ItemFeatures:
        item_id, (window_id, s) = kv
        return item_features(
            item_id, settings.feature_window_s, ALIGN_TO + hop * window_id + window, s
        )

    # ItemFeatures
    feats = op.map("to_features", stats.down, to_features)
    rows = op.map(
        "feature_rows",
        feats,
        lambda f: Rows(
            "item_features",
            FEATURE_COLUMNS,
            [[f.item_id, f.window_s, f.window_end, f.impressions, f.views, f.likes, f.completion]],
        ),
    )
    op.output("to_clickhouse", rows, ClickHouseSink(settings))
    op.output(
        "to_topic",
        op.map("feature_message", feats, lambda f: to_kafka(f.item_id, msgspec.json.encode(f))),
        kafka_output(settings, topics.ITEM_FEATURES),
    )
    return flow


def flow() -> Dataflow:
    """Entry point for `python -m bytewax.run dataflows.item_features:flow`."""
    return build_flow(Settings.from_env())
