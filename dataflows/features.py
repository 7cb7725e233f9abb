"""Sliding-window features: engagement per item, creator and user, and user affinities.

read (a poll of one event topic-partition; an empty one is a heartbeat: caught up, quiet)
  ─▶ decode
  ─▶ count        phase one (models.counting): late events split off; the rest summed per
                  (table, entity, second), so a viral item is one row per poll
  ─▶ to_shards    rows routed by a stable hash of the entity (affinities by their user);
                  the watermark, and whether the partition is quiet, to every shard
  ─▶ window       phase two, per shard: items and creators in sliding windows
                  (models.windows: 1 m / 5 m / 1 h / 24 h, every hop written, live windows
                  published every `feature_emit_s`), users and affinities in tumbling ones
                  (models.tumbling); rows are buffered and merged in bulk
  ─┬▶ to_clickhouse   closed windows: item/creator/user_features, user_affinity
   ├▶ live_items      live item windows on `item-features` (the API's cache)
   └▶ late_to_clickhouse  late events, with the watermark that made them late

Crashes: Bytewax recovery snapshots every shard's windows, phase one's per-partition state
and the source offsets each epoch; closed windows go through a sink that takes part in the
snapshot, so a restart after kill -9 resumes from the last one and writes what it replays
again (a window written twice is one row: ReplacingMergeTree). The kill test checks that the
tables end equal to an uninterrupted run's. A run killed mid-epoch leaves snapshots past its
last commit, which Bytewax would later mix into the state of keys the next run did not
snapshot again (one restart in four lost its windows that way); the runner deletes them
before each start (`dataflows.runner.drop_uncommitted`).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
import msgspec
import numpy as np
import pyarrow as pa
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulLogic

from dataflows.catalog import Catalog
from dataflows.io.clickhouse_sinks import CommittedClickHouseSink
from dataflows.io.kafka_sink import Keyed, kafka_output, to_kafka
from dataflows.io.poll_source import KafkaPollSource, Polled
from dataflows.io.rows import Rows
from dataflows.parse import stored_events
from models.counting import (
    AFFINITY_COUNTERS,
    ENGAGEMENT_TABLES,
    TABLES,
    Counted,
    Counts,
    count_events,
    width,
)
from models.features.counts import packed_counts
from models.features.weights import COUNTERS
from models.items import ItemTable
from models.tumbling import TumblingCounts
from models.windows import WINDOWS, Emitted, SlidingCounts
from swipeloop import topics
from swipeloop.arrays import Floats, Ids
from swipeloop.contracts import ItemFeatures
from swipeloop.metrics import FEATURE_EVENTS, FEATURE_STATE_BYTES, LATE_EVENTS, WINDOW_DROPPED
from swipeloop.settings import Settings

log = logging.getLogger(__name__)
FOREVER_S = 2**62
_encoder = msgspec.json.Encoder()

# ClickHouse table and entity column of each engagement table
ENGAGEMENT_OUT = {
    "item": ("item_features", "item_id"),
    "creator": ("creator_features", "creator_id"),
    "user": ("user_features", "user_id"),
}
AFFINITY_KIND = {"user_creator": "creator", "user_tag": "tag"}
# Items and creators are few and served: sliding windows, every hop written, live windows
# for items. Users and their affinities are many and only analysed: tumbling windows (each
# length written once per length), affinities only over 1 h and 24 h (a minute of affinity
# says little).
SLIDING = frozenset({"item", "creator"})
TABLE_WINDOWS = {
    "item": WINDOWS,
    "creator": WINDOWS,
    "user": WINDOWS,
    "user_creator": WINDOWS[2:],
    "user_tag": WINDOWS[2:],
}


def written(table: str, window_s: int, end_s: int) -> bool:
    """Whether the flow writes the closed window of `table` ending at `end_s` to ClickHouse."""
    lengths = {spec.length_s for spec in TABLE_WINDOWS[table]}
    return window_s in lengths and (table in SLIDING or end_s % window_s == 0)


Windows = SlidingCounts | TumblingCounts
MERGE_ROWS = 20_000  # a shard merges its buffered rows into its windows at this many
HEARTBEAT_S = 1.0  # how often a caught-up source partition says it is alive and quiet


LATE_COLUMNS = [
    "event_id",
    "user_id",
    "item_id",
    "kind",
    "client_ts",
    "watermark",
    "topic",
    "partition",
    "offset",
]


@dataclass
class PartitionState:
    """Phase one's state per source partition: its newest second (the watermark) and the
    next offset to count (a replay from before it is not counted again)."""

    newest_s: int | None = None
    next_offset: int = 0


@dataclass
class Partial:
    """The rows of one shard from one poll (a table each), and the source's watermark."""

    shard: str
    source: str
    tables: dict[str, Counts]
    watermark_s: int | None
    quiet_since: float | None = None  # the source is caught up and quiet since then


def to_shards(
    source: str, counted: Counted, shards: int, quiet_since: float | None = None
) -> list[tuple[str, Partial]]:
    """Every shard gets this poll's watermark, and the rows of its entities if any."""
    parts = {
        str(shard): Partial(str(shard), source, {}, counted.watermark_s, quiet_since)
        for shard in range(shards)
    }
    for table, counts in counted.tables.items():
        for shard, rows in counts.by_shard().items():
            parts[str(shard)].tables[table] = rows
    return list(parts.items())


@dataclass
class Closed:
    """Windows closed by the watermark (final; a correction repeats one with new counts)."""

    table: str
    windows: list[Emitted]


@dataclass
class Live:
    """Items whose live windows changed: their counts per window, as of `as_of_s`."""

    keys: Ids
    per_window: list[Floats]
    ends: list[int]
    as_of_s: int


def new_tables() -> dict[str, Windows]:
    """A shard's windows, one set per table; only items keep live windows (they are served)."""
    return {
        table: SlidingCounts(width(table), TABLE_WINDOWS[table], live=table == "item")
        if table in SLIDING
        else TumblingCounts(width(table), tuple(spec.length_s for spec in TABLE_WINDOWS[table]))
        for table in TABLES
    }


def add_rows(windows: Windows, counts: Counts) -> None:
    """Merge one partial's rows of a table into its windows."""
    if isinstance(windows, SlidingCounts):
        windows.add(counts.keys, counts.seconds, counts.sums)
    else:
        windows.add(counts.ids, counts.keys, counts.targets, counts.seconds, counts.sums)


@dataclass
class ShardState:
    """What a shard snapshots: its windows per table, the rows not merged into them yet, and
    each source partition's watermark and whether it is quiet."""

    shard: str
    tables: dict[str, Windows] = field(default_factory=new_tables)
    # per source partition heard from in this run: (watermark, quiet since)
    sources: dict[str, tuple[int | None, float | None]] = field(default_factory=dict)
    watermark_s: int | None = None
    pending: dict[str, list[Counts]] = field(default_factory=dict)  # rows not merged yet
    pending_rows: int = 0

    def buffer(self, tables: dict[str, Counts]) -> None:
        """Keep a partial's rows to merge with the next ones (a merge costs per call, so
        many small partials are merged as one)."""
        for table, counts in tables.items():
            self.pending.setdefault(table, []).append(counts)
            self.pending_rows += len(counts.ids)

    def merge(self) -> None:
        """Merge the buffered rows into the windows."""
        for table, parts in self.pending.items():
            windows = self.tables[table]
            before = windows.dropped
            add_rows(windows, Counts.concat(parts))
            if windows.dropped > before:
                WINDOW_DROPPED.inc(windows.dropped - before)
                log.warning(
                    "%s/%s: %d partial sums older than every kept bucket",
                    table,
                    self.shard,
                    windows.dropped - before,
                )
        self.pending, self.pending_rows = {}, 0

    def next_close_s(self) -> float:
        """The earliest watermark that closes a window of the merged rows."""
        return min(windows.next_close_s() for windows in self.tables.values())

    def watermark(self, now: float, idle_s: float, expected: Iterable[str]) -> int | None:
        """The slowest source's watermark: a window closes only when no partition can still
        add to it. A partition not heard from in this run (still starting, or restarted)
        holds everything back. One caught up and quiet for `idle_s` holds nothing back: when
        all are, event time runs on with the wall clock from the slowest of them, so the
        last windows close too. A partition that is only slow never counts as quiet (its
        source says when it is caught up)."""
        marks, quiet = [], []
        for source in expected:
            if source not in self.sources:
                return None
            wm, since = self.sources[source]
            if since is not None and now - since >= idle_s:
                if wm is not None:
                    quiet.append(wm + int(now - since))
                continue
            if wm is None:
                return None
            marks.append(wm)
        if marks:
            return min(marks)
        return min(quiet) if quiet else None

    def close(self, watermark_s: int) -> list[Closed]:
        """The windows of every table that the watermark closed."""
        out = []
        for table, counts in self.tables.items():
            closed = counts.close(watermark_s)
            if closed:
                out.append(Closed(table, closed))
        return out

    def nbytes(self) -> int:
        return sum(counts.nbytes() for counts in self.tables.values())


class Windower(StatefulLogic[Partial, Closed | Live, ShardState]):
    """Phase two for one shard: merges partials, closes windows, emits live ones."""

    def __init__(
        self, settings: Settings, resume: ShardState | None, drain: bool, sources: list[str]
    ) -> None:
        self._state = resume  # built on the first partial, which names the shard
        self._sources = sources
        if resume is not None:  # a restart: every partition holds all until it is heard again
            resume.sources = {}
        self._emit = timedelta(seconds=settings.feature_emit_s)
        self._idle_s = settings.feature_idle_s
        self._drain = drain
        self._next = datetime.now(UTC) + self._emit
        self._evicted_at = time.monotonic()

    def on_item(self, value: Partial) -> tuple[Iterable[Closed | Live], bool]:
        if self._state is None:
            self._state = ShardState(value.shard)
        state = self._state
        state.buffer(value.tables)
        if state.pending_rows >= MERGE_ROWS:
            state.merge()
        state.sources[value.source] = (value.watermark_s, value.quiet_since)
        return self._close(), StatefulLogic.RETAIN

    def _close(self) -> list[Closed | Live]:
        assert self._state is not None
        state = self._state
        watermark = state.watermark(time.time(), self._idle_s, self._sources)
        if watermark is None or (state.watermark_s is not None and watermark <= state.watermark_s):
            return []
        state.watermark_s = watermark
        due = state.next_close_s()
        if state.pending and watermark >= due:
            state.merge()  # what closes must be complete
            due = state.next_close_s()
        if watermark < due:
            return []
        return list(state.close(watermark))

    def on_notify(self) -> tuple[Iterable[Closed | Live], bool]:
        self._next = datetime.now(UTC) + self._emit
        state = self._state
        if state is None:
            return [], StatefulLogic.RETAIN
        state.merge()  # the live windows count everything received
        if state.watermark_s is not None and time.monotonic() - self._evicted_at > 10:
            for windows in state.tables.values():
                windows.evict(state.watermark_s)
            self._evicted_at = time.monotonic()
            FEATURE_STATE_BYTES.labels(state.shard).set(state.nbytes())
        return [*self._close(), *self._live()], StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Closed | Live], bool]:
        out: list[Closed | Live] = []
        if self._state is None:
            return out, StatefulLogic.RETAIN
        state = self._state
        state.merge()
        FEATURE_STATE_BYTES.labels(state.shard).set(state.nbytes())
        if self._drain:  # caught up and ending: every window is as complete as it will be
            out.extend(state.close(FOREVER_S))
        out.extend(self._live())
        return out, StatefulLogic.RETAIN

    def _live(self) -> list[Closed | Live]:
        if self._state is None:
            return []
        items = self._state.tables["item"]  # only items are published
        assert isinstance(items, SlidingCounts)
        keys, per_window, ends = items.live()
        if not len(keys) or items.newest_s is None:
            return []
        return [Live(keys, per_window, ends, items.newest_s)]

    def notify_at(self) -> datetime:
        return self._next

    def snapshot(self) -> ShardState:
        assert self._state is not None, "a shard's logic is built by its first partial"
        return copy.deepcopy(self._state)


def closed_rows(closed: Closed, version: int) -> Rows:
    """The ClickHouse rows of closed windows, as one Arrow table (no Python row per window)."""
    keys = np.concatenate([w.keys for w in closed.windows])
    sizes = [len(w.keys) for w in closed.windows]
    counts = np.concatenate([w.counts for w in closed.windows])  # exact: `on_grid`
    columns: dict[str, Any] = {}
    if closed.table in ENGAGEMENT_TABLES:
        table, key_column = ENGAGEMENT_OUT[closed.table]
        columns[key_column] = pa.array(keys, pa.string())
        names: tuple[str, ...] = COUNTERS
    else:
        table = "user_affinity"
        targets = [w.targets for w in closed.windows if w.targets is not None]
        columns["user_id"] = pa.array(keys, pa.string())
        kind = pa.scalar(AFFINITY_KIND[closed.table], pa.string())
        columns["kind"] = pa.repeat(kind, len(keys))
        columns["target"] = pa.array(np.concatenate(targets), pa.string())
        names = AFFINITY_COUNTERS
    columns["window_s"] = pa.array(
        np.repeat([w.window_s for w in closed.windows], sizes).astype(np.uint32)
    )
    columns["window_end"] = pa.array(
        np.repeat([w.end_s for w in closed.windows], sizes).astype("datetime64[s]")
    )
    for i, name in enumerate(names):
        columns[name] = pa.array(counts[:, i])
    columns["version"] = pa.array(np.full(len(keys), version, dtype=np.uint64))
    return Rows(table, list(columns), [], arrow=pa.table(columns))


def item_messages(live: Live) -> list[ItemFeatures]:
    """Live item windows as `item-features` messages."""
    as_of = datetime.fromtimestamp(live.as_of_s, UTC)
    lengths = [spec.length_s for spec in WINDOWS]
    ends = [datetime.fromtimestamp(end, UTC) for end in live.ends]
    packed = packed_counts(np.stack(live.per_window, axis=1))  # item, window, counter
    size = len(packed) // len(live.keys)
    return [
        ItemFeatures(
            item_id=key,
            as_of=as_of,
            window_s=lengths,
            window_end=ends,
            counts=packed[i * size : (i + 1) * size],
        )
        for i, key in enumerate(live.keys.tolist())
    ]


def encoded(messages: list[ItemFeatures]) -> list[Keyed]:
    """Messages keyed by item, for the compacted topic."""
    encode = _encoder.encode
    return [to_kafka(f.item_id, encode(f)) for f in messages]


def late_rows(counted: Counted, polled: Polled) -> Rows:
    """The late events of a poll, for the `late_events` table."""
    return Rows(
        "late_events",
        LATE_COLUMNS,
        [
            [
                late.event.event_id,
                late.event.user_id,
                late.event.item_id,
                late.event.kind,
                late.event.client_ts,
                datetime.fromtimestamp(late.watermark_s, UTC),
                polled.topic,
                polled.partition,
                late.offset,
            ]
            for late in counted.late
        ],
    )


def build_flow(
    settings: Settings,
    stop: threading.Event | None = None,
    *,
    drain: bool = False,
    catalog: Catalog,
) -> Dataflow:
    """The features flow, wired to the settings' broker and ClickHouse.

    `drain` ends the flow once every partition is read to its end, closing every window;
    `catalog`: the item catalog, started and stopped by the caller (it outlives no flow run).
    """
    if not catalog.wait_caught_up(60):
        log.warning("the item catalog is not caught up: early events count without creator")
    lateness, shards = settings.feature_lateness_s, settings.feature_shards
    flow = Dataflow("features")
    source = KafkaPollSource(
        settings, topics.EVENT_TOPICS, stop, drain, settings.feature_batch_size, HEARTBEAT_S
    )
    parts = source.list_parts()
    polls = op.input("read", flow, source)

    items = ItemTable(catalog)  # this process's item codes, shared by its partitions

    def count(
        state: PartitionState | None, polled: Polled
    ) -> tuple[PartitionState, tuple[Polled, Counted]]:
        state = state or PartitionState()
        fresh = [r for r in polled.records if r[0] >= state.next_offset]
        if fresh:  # a replay of what this state already counted is skipped (exactly once)
            state.next_offset = fresh[-1][0] + 1
        events = stored_events(fresh)
        state.newest_s, counted = count_events(events, state.newest_s, lateness, items, shards)
        FEATURE_EVENTS.inc(len(events) - len(counted.late))
        return state, (polled, counted)

    # (topic:partition, (Polled, Counted))
    counted = op.stateful_map("count", op.key_on("by_source", polls, lambda p: p.key), count)
    late = op.filter_map(
        "late_events",
        counted,
        lambda kv: late_rows(kv[1][1], kv[1][0]) if kv[1][1].late else None,
    )
    op.inspect("count_late", late, lambda _step, rows: LATE_EVENTS.inc(len(rows.rows)))
    op.output(
        "late_to_clickhouse",
        op.key_on("late_key", late, lambda _rows: "late"),
        CommittedClickHouseSink(settings),
    )
    # (shard, Partial)
    partials = op.flat_map(
        "to_shards",
        counted,
        lambda kv: to_shards(kv[0], kv[1][1], shards, kv[1][0].quiet_since),
    )
    windows = op.stateful(
        "window",
        partials,
        lambda resume: Windower(settings, resume, drain, parts),
    )
    # (shard, Closed)
    closed = op.filter_map("closed", windows, lambda kv: kv if isinstance(kv[1], Closed) else None)
    # (shard, Rows): written before the epoch that closed them is committed, each shard's
    # through one sink partition (the shards spread the inserts over the cluster's workers)
    rows = op.map(
        "closed_rows",
        closed,
        lambda kv: (kv[0], closed_rows(kv[1], time.time_ns() // 1000)),  # type: ignore[arg-type]
    )
    op.output("to_clickhouse", rows, CommittedClickHouseSink(settings))

    messages = op.flat_map(
        "live_items",
        windows,
        lambda kv: encoded(item_messages(kv[1])) if isinstance(kv[1], Live) else [],
    )
    op.output("to_topic", messages, kafka_output(settings, topics.ITEM_FEATURES))
    return flow


def flow() -> Dataflow:
    """Entry point for `python -m bytewax.run dataflows.features:flow` (without recovery)."""
    settings = Settings.from_env()
    return build_flow(settings, catalog=Catalog.for_process(settings))
