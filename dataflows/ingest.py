"""Ingest: events, items and impressions from Kafka into ClickHouse; rejects to the DLQ.

read ─▶ parse ─▶ split_rejects ─┬─▶ to_clickhouse
                                └─▶ dlq_to_kafka, dlq_to_clickhouse
"""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, TypeGuard, cast

import bytewax.operators as op
import msgspec
from bytewax.connectors.kafka import KafkaError
from bytewax.dataflow import Dataflow, Stream

from dataflows.io import (
    ClickHouseSink,
    Message,
    Rows,
    kafka_input,
    kafka_output,
    offsets_token,
    to_kafka,
)
from dataflows.parse import ROUTES, Rejected
from swipeloop import topics
from swipeloop.contracts import DeadLetter
from swipeloop.settings import Settings

DLQ_COLUMNS = ["reason", "topic", "partition", "offset", "payload", "failed_at"]


def parse_batch(
    settings: Settings, batch: list[Message | KafkaError[Any, Any]]
) -> list[Rows | DeadLetter]:
    """Rows grouped per source partition (one dedup token each), plus a dead letter per reject."""
    grouped: dict[tuple[str, int], list[tuple[Message, list[Any]]]] = defaultdict(list)
    out: list[Rows | DeadLetter] = []
    for msg in batch:
        if isinstance(msg, KafkaError):
            out.append(_dead(f"kafka error: {msg.err}", msg.msg))
            continue
        route = ROUTES.get(msg.topic or "")
        if route is None:
            out.append(_dead(f"no schema for topic {msg.topic!r}", msg))
            continue
        try:
            row = route[2](msg.value, msg.topic or "", msg.partition or 0, msg.offset or 0)
        except Rejected as exc:
            out.append(_dead(str(exc), msg))
            continue
        grouped[(msg.topic or "", msg.partition or 0)].append((msg, row))
    for (topic, _partition), pairs in grouped.items():
        table, columns, _ = ROUTES[topic]
        token = offsets_token(settings, table, [m for m, _ in pairs])
        out.append(Rows(table, columns, [r for _, r in pairs], token))
    return out


def is_rows(x: Rows | DeadLetter) -> TypeGuard[Rows]:
    """Rows go on to ClickHouse; the rest are dead letters."""
    return isinstance(x, Rows)


def _dead(reason: str, msg: Message) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        topic=msg.topic or "",
        partition=msg.partition or 0,
        offset=msg.offset or 0,
        payload=msg.value or b"",
        failed_at=datetime.now(UTC),
    )


def dead_rows(dead: DeadLetter) -> Rows:
    """The `dlq` row of a dead letter (the payload kept as text, undecodable bytes replaced)."""
    row = [
        dead.reason,
        dead.topic,
        dead.partition,
        dead.offset,
        dead.payload.decode("utf-8", "replace"),
        dead.failed_at,
    ]
    return Rows("dlq", DLQ_COLUMNS, [row])


def build_flow(settings: Settings, stop: threading.Event | None = None) -> Dataflow:
    """The ingest flow, wired to the settings' broker and ClickHouse."""
    flow = Dataflow("ingest")
    source = [topics.EVENTS_ACTIONS, topics.EVENTS_CONTEXT, topics.ITEMS, topics.IMPRESSIONS]
    msgs = op.input("read", flow, kafka_input(settings, source, stop))
    # Rows | DeadLetter
    parsed = op.flat_map_batch("parse", msgs, lambda batch: parse_batch(settings, batch))
    split = op.branch("split_rejects", parsed, is_rows)
    op.output("to_clickhouse", split.trues, ClickHouseSink(settings))
    dead = cast(Stream[DeadLetter], split.falses)
    # (key, DeadLetter JSON)
    dlq_msgs = op.map(
        "dlq_message", dead, lambda d: to_kafka(f"{d.topic}-{d.partition}", msgspec.json.encode(d))
    )
    op.output("dlq_to_kafka", dlq_msgs, kafka_output(settings, topics.DLQ))
    op.output("dlq_to_clickhouse", op.map("dlq_rows", dead, dead_rows), ClickHouseSink(settings))
    return flow


def flow() -> Dataflow:
    """Entry point for `python -m bytewax.run dataflows.ingest:flow`."""
    return build_flow(Settings.from_env())
