"""Ingest: events, items, impressions from Kafka into ClickHouse exactly once; rejects to a DLQ.

read (one item per poll of a topic-partition)
  ─▶ parse          rows per table, a dead letter per reject (pure)
  ─▶ dedup          drop event_ids this partition has seen in the last `dedup_window_s`
  ─┬▶ to_clickhouse  only offsets past what ClickHouse holds, one token per insert
   └▶ dlq_to_kafka   dead letters, keyed by their source topic:partition

With recovery on (see `dataflows.runner`), the source offsets, the dedup windows and the
sink's progress are snapshotted together each epoch; a restart replays from the snapshot
and the sink drops what ClickHouse already holds. Result: every message once in ClickHouse.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow

from dataflows.io.clickhouse_sinks import cluster_workers
from dataflows.io.kafka_sink import kafka_output, to_kafka
from dataflows.io.poll_source import KafkaPollSource, Polled
from dataflows.io.progress import ClickHouseProgressSink
from dataflows.io.rows import TableRows
from dataflows.parse import ROUTES, Rejected, dlq_line, row_line
from swipeloop import topics
from swipeloop.clickhouse import connect
from swipeloop.contracts import DeadLetter
from swipeloop.metrics import DEAD_LETTERS, DUPLICATES_DROPPED
from swipeloop.settings import Settings

SOURCE_TOPICS = (topics.EVENTS_ACTIONS, topics.EVENTS_CONTEXT, topics.ITEMS, topics.IMPRESSIONS)


@dataclass
class Parsed:
    """One poll, parsed: rows per table (with offsets) and the rejects."""

    source: str
    tables: list[TableRows]
    dead: list[DeadLetter]


def parse_poll(polled: Polled, now: datetime | None = None) -> Parsed:
    """Every message of a poll becomes a row of its topic's table or a dead letter (pure)."""
    failed_at = now or datetime.now(UTC)
    route = ROUTES.get(polled.topic)
    dead: list[DeadLetter] = []
    rows = TableRows(
        route.table if route else "",
        [],
        [],
        months=[] if route and route.month_of else None,
        ids=[] if route and route.dedup_key else None,
        stamps=[] if route and route.dedup_key else None,
        users=[] if route and route.user_of else None,
    )
    for offset, value, error in polled.records:
        reason = error
        if reason is None and route is None:
            reason = f"no schema for topic {polled.topic!r}"
        if reason is None and route is not None:
            try:
                contract = route.parse(value)
            except Rejected as exc:
                reason = str(exc)
            else:
                rows.lines.append(
                    row_line(contract, polled.topic, polled.partition, offset, polled.epoch)
                )
                rows.offsets.append(offset)
                if rows.months is not None and route.month_of:
                    rows.months.append(route.month_of(contract))
                if rows.ids is not None and rows.stamps is not None and route.dedup_key:
                    key, stamp = route.dedup_key(contract)
                    rows.ids.append(key)
                    rows.stamps.append(stamp)
                if rows.users is not None and route.user_of:
                    rows.users.append(route.user_of(contract))
                continue
        dead.append(
            DeadLetter(
                reason=reason or "unknown",
                topic=polled.topic,
                partition=polled.partition,
                offset=offset,
                payload=value or b"",
                failed_at=failed_at,
            )
        )
    tables = [rows] if rows.lines else []
    if dead:
        lines = [dlq_line(d, polled.epoch) for d in dead]
        tables.append(TableRows("dlq", lines, [d.offset for d in dead]))
    return Parsed(polled.key, tables, dead)


@dataclass
class SeenIds:
    """Ids one source partition accepted recently, oldest first (the dedup window).

    An OrderedDict, not a dict: the window evicts from the front, and a dict's first key is
    found by scanning past every slot deleted before it (until the dict is next resized), so
    once the window was full each event paid a scan of up to ~100,000 slots: the ingest flow
    fell from ~110,000 to ~25,000 events/s past 200,000 ids per partition (bench/RESULTS.md).
    A snapshot from before holds a dict: it works (slowly) until the next snapshot converts it.
    """

    received_ms: OrderedDict[int, int] = field(default_factory=OrderedDict)
    newest_ms: int = 0
    dropped: int = 0

    def __deepcopy__(self, _memo: dict[int, Any]) -> SeenIds:
        # Bytewax deep-copies state at every snapshot; keys and values are immutable, so a
        # shallow copy of the mapping is a full copy, several times faster.
        return SeenIds(OrderedDict(self.received_ms), self.newest_ms, self.dropped)


def dedup(seen: SeenIds, parsed: Parsed, window_ms: int, max_ids: int) -> tuple[SeenIds, Parsed]:
    """Drop rows whose id this partition already accepted within the window.

    A retried batch lands on the same partition (events are keyed by user_id), so a window
    per partition catches it. Eviction is by the newest receive time seen, not the wall
    clock, so a replay after a crash makes the same decisions.
    """
    ids = seen.received_ms
    tables = []
    for part in parsed.tables:
        if part.ids is None or part.stamps is None:
            tables.append(part)
            continue
        keep = []
        for i, (key, stamp) in enumerate(zip(part.ids, part.stamps, strict=True)):
            if key in ids:
                seen.dropped += 1
                continue
            ids[key] = stamp
            seen.newest_ms = max(seen.newest_ms, stamp)
            keep.append(i)
        if len(keep) == len(part.ids):
            tables.append(part)
        elif keep:
            tables.append(part.take(keep))
    horizon = seen.newest_ms - window_ms
    while ids:  # oldest first: arrival order is (nearly) receive order
        oldest = next(iter(ids))  # (O(1) in an OrderedDict)
        if len(ids) <= max_ids and ids[oldest] >= horizon:
            break
        del ids[oldest]
    return seen, Parsed(parsed.source, tables, parsed.dead)


def build_flow(
    settings: Settings,
    stop: threading.Event | None = None,
    *,
    drain: bool = False,
    connect_clickhouse: Callable[[Settings], Any] = connect,
) -> Dataflow:
    """The ingest flow, wired to the settings' broker and ClickHouse.

    `drain` ends the flow once every partition is read to its end (catch up and exit).
    """
    flow = Dataflow("ingest")
    polls = op.input("read", flow, KafkaPollSource(settings, SOURCE_TOPICS, stop, drain))
    parsed = op.map("parse", polls, lambda p: (p.key, parse_poll(p)))
    window_ms, max_ids = int(settings.dedup_window_s * 1000), settings.dedup_max_ids

    def drop_repeats(seen: SeenIds | None, p: Parsed) -> tuple[SeenIds, Parsed]:
        seen = seen or SeenIds()
        before = seen.dropped
        seen, unique = dedup(seen, p, window_ms, max_ids)
        DUPLICATES_DROPPED.inc(seen.dropped - before)
        return seen, unique

    unique = op.stateful_map("dedup", parsed, drop_repeats)
    # (topic:partition, (topic:partition, [TableRows]))
    tables = op.map("tables", unique, lambda kv: (kv[0], (kv[0], kv[1].tables)))
    op.output(
        "to_clickhouse",
        tables,
        ClickHouseProgressSink(
            settings, parts=cluster_workers(settings), connect_clickhouse=connect_clickhouse
        ),
    )
    dead = op.flat_map("dead_letters", unique, lambda kv: kv[1].dead)
    op.inspect("count_dead", dead, lambda _step, d: DEAD_LETTERS.labels(d.topic).inc())
    dlq_msgs = op.map(
        "dlq_message", dead, lambda d: to_kafka(f"{d.topic}:{d.partition}", msgspec.json.encode(d))
    )
    op.output("dlq_to_kafka", dlq_msgs, kafka_output(settings, topics.DLQ))
    return flow


def flow() -> Dataflow:
    """Entry point for `python -m bytewax.run dataflows.ingest:flow` (without recovery)."""
    return build_flow(Settings.from_env())
