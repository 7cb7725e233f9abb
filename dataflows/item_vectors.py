"""Item vectors: online item2vec on co-engagement, published every second.

read ─▶ decode ─▶ by_user ─▶ co_engaged_pairs ─▶ to_table ─▶ learn ─▶ publish
                                                                 ├─▶ to_clickhouse
                                                                 └─▶ to_topic
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.connectors.kafka import KafkaError
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulLogic

from dataflows.io import ClickHouseSink, Message, Rows, kafka_input, kafka_output, to_kafka
from models.embeddings import EmbeddingTable
from models.features import engagement_weight
from swipeloop import topics
from swipeloop.clickhouse import connect, read_vectors
from swipeloop.contracts import ItemVector, ReceivedEvent
from swipeloop.settings import Settings

RECENT = 5
VECTOR_COLUMNS = ["item_id", "version", "updated_at", "vector"]
Pair = tuple[str, str, float]

_events = msgspec.json.Decoder(ReceivedEvent)


def decode(msg: Message | KafkaError[Any, Any]) -> ReceivedEvent | None:
    """An event; malformed messages are the ingest flow's to dead-letter."""
    if isinstance(msg, KafkaError):
        return None
    try:
        return _events.decode(msg.value or b"")
    except msgspec.DecodeError:
        return None


def co_engaged_pairs(recent: list[str] | None, ev: ReceivedEvent) -> tuple[list[str], list[Pair]]:
    """Pair an engaged item with the user's last few positives (negatives push away)."""
    recent = recent or []
    weight = engagement_weight(ev.kind, ev.watch_ms)
    if weight == 0:
        return recent, []
    others = [i for i in recent if i != ev.item_id]
    if weight < 0:
        return recent, [(prev, ev.item_id, weight) for prev in others[-2:]]
    pairs = [(prev, ev.item_id, weight) for prev in others]
    return ([*others, ev.item_id])[-RECENT:], pairs


class Learner(StatefulLogic[Pair, list[ItemVector], tuple[list[str], object]]):
    """Holds the embedding table, applies each pair, emits changed vectors every interval."""

    def __init__(self, settings: Settings, table: EmbeddingTable) -> None:
        self._settings = settings
        self._table = table
        self._dirty: set[str] = set()
        self._next = datetime.now(UTC)

    def on_item(self, value: Pair) -> tuple[Iterable[list[ItemVector]], bool]:
        a, b, weight = value
        self._dirty |= self._table.update(a, b, weight, self._settings.embedding_negatives)
        return [], StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[list[ItemVector]], bool]:
        self._next = datetime.now(UTC) + timedelta(seconds=self._settings.publish_interval_s)
        if not self._dirty:
            return [], StatefulLogic.RETAIN
        now = datetime.now(UTC)
        version = int(now.timestamp() * 1000)
        out = [
            ItemVector(
                item_id=i, version=version, updated_at=now, vector=self._table.get(i).tolist()
            )
            for i in sorted(self._dirty)
        ]
        self._dirty.clear()
        return [out], StatefulLogic.RETAIN

    def notify_at(self) -> datetime:
        return self._next

    def snapshot(self) -> tuple[list[str], object]:
        return self._table.export()


def load_table(settings: Settings) -> EmbeddingTable:
    """Start from the vectors already learned (ClickHouse outlives a memory-only broker)."""
    table = EmbeddingTable(settings.embedding_dim, settings.embedding_lr)
    table.load(*read_vectors(connect(settings), settings.embedding_dim))
    return table


def build_flow(settings: Settings, stop: threading.Event | None = None) -> Dataflow:
    """The item-vectors flow, wired to the settings' broker and ClickHouse."""
    flow = Dataflow("item_vectors")
    source = [topics.EVENTS_CONTEXT, topics.EVENTS_ACTIONS]
    msgs = op.input("read", flow, kafka_input(settings, source, stop))
    events = op.filter_map("decode", msgs, decode)
    # (user_id, ReceivedEvent)
    by_user = op.key_on("by_user", events, lambda e: e.user_id)
    # (user_id, Pair)
    pairs = op.stateful_flat_map("co_engaged_pairs", by_user, co_engaged_pairs)
    # One learner holds the whole table in this first version ("table", Pair).
    to_table = op.key_on("to_table", op.key_rm("drop_user", pairs), lambda _p: "table")

    def build_learner(resume: tuple[list[str], object] | None) -> Learner:
        table = load_table(settings)
        if resume is not None and resume[1] is not None:  # a recovery snapshot is newer
            table.load(resume[0], resume[1])  # type: ignore[arg-type]
        return Learner(settings, table)

    # ("table", [ItemVector])
    published = op.stateful("learn", to_table, build_learner)
    vectors = op.flat_map("publish", published, lambda kv: kv[1])
    rows = op.map(
        "vector_rows",
        vectors,
        lambda v: Rows(
            "item_embeddings", VECTOR_COLUMNS, [[v.item_id, v.version, v.updated_at, v.vector]]
        ),
    )
    op.output("to_clickhouse", rows, ClickHouseSink(settings))
    op.output(
        "to_topic",
        op.map("vector_message", vectors, lambda v: to_kafka(v.item_id, msgspec.json.encode(v))),
        kafka_output(settings, topics.ITEM_VECTORS),
    )
    return flow


def flow() -> Dataflow:
    """Entry point for `python -m bytewax.run dataflows.item_vectors:flow`."""
    return build_flow(Settings.from_env())
