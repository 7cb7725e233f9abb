"""Exactly-once ClickHouse inserts: per table and source partition, only the offsets past
what is stored. The sink half of exactly-once; `poll_source` is the source half."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from clickhouse_connect.driver.client import Client

from dataflows.forget import Forgetting
from dataflows.io.in_flight import OneInFlight
from dataflows.io.rows import TableRows
from swipeloop.clickhouse import connect, insert_lines, with_retry
from swipeloop.metrics import INGESTED_ROWS
from swipeloop.settings import Settings

log = logging.getLogger(__name__)

Progress = dict[str, int]  # "table|topic:partition" -> last offset stored in ClickHouse
SourceRows = tuple[str, list[TableRows]]  # (topic:partition, its rows per table)


class _ProgressPartition(StatefulSinkPartition[SourceRows, Progress]):
    """Buffers rows per table and source partition; inserts when big or old enough, and
    always before a snapshot, so no snapshot covers an offset that ClickHouse lacks.

    A flush hands its inserts to a thread (ClickHouse parses and writes without the GIL) and
    the flow goes on parsing; at most one flush is in flight, and a snapshot waits for it.
    """

    def __init__(self, settings: Settings, client: Client, resume: Progress | None) -> None:
        self._settings = settings
        self._client = client
        self._progress: Progress = dict(resume or {})  # stored in ClickHouse
        self._taken: Progress = {}  # buffered or being inserted
        self._checked: set[str] = set()
        self._pending: dict[str, TableRows] = {}
        self._pending_rows = 0
        self._oldest: float | None = None
        self._inserts: OneInFlight[Progress] = OneInFlight("clickhouse-insert")
        self._forgetting = Forgetting(settings.clickhouse_cluster)

    def write_batch(self, items: list[SourceRows]) -> None:
        for source, tables in items:
            for part in tables:
                self._add(source, part)
        too_old = self._oldest is not None and (
            time.monotonic() - self._oldest >= self._settings.flow_flush_s
        )
        if self._pending_rows >= self._settings.flow_flush_rows or too_old:
            self._flush()

    def _add(self, source: str, part: TableRows) -> None:
        key = f"{part.table}|{source}"
        done = self._taken[key] if key in self._taken else self._stored(key, part.table, source)
        new = part.tail_after(done)  # a replay keeps only what is not stored or buffered
        if new is None:
            return
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = new.buffer()
        else:
            pending.extend(new)
        self._taken[key] = new.offsets[-1]
        self._pending_rows += len(new.offsets)
        if self._oldest is None:
            self._oldest = time.monotonic()

    def _flush(self) -> None:
        """Start inserting what is buffered (after the previous flush has landed)."""
        if not self._pending:
            self._settle()
            return
        pending, self._pending = self._pending, {}
        self._pending_rows = 0
        self._oldest = None
        self._landed(self._inserts.submit(self._insert, pending))

    def _settle(self) -> None:
        """Wait for the flush in flight; what it inserted is now progress."""
        self._landed(self._inserts.settle())

    def _landed(self, landed: Progress | None) -> None:
        if landed is not None:
            self._progress.update(landed)

    def _insert(self, pending: dict[str, TableRows]) -> Progress:
        landed: Progress = {}
        erased = self._forgetting.learn(self._client)
        for key, whole in pending.items():
            source = key.split("|", 1)[1]
            landed[key] = whole.offsets[-1]  # rows of erased users count as handled
            part = self._forget(whole)
            if not part.offsets:
                continue
            for lines, offsets in part.runs():
                where = f"{source}:{offsets[0]}:{offsets[-1]}"
                token = f"{self._settings.broker_epoch}:{part.table}:{where}"
                with_retry(
                    f"insert into {part.table} ({len(lines)} rows)",
                    partial(insert_lines, self._client, part.table, lines, token),
                )
                INGESTED_ROWS.labels(part.table).inc(len(lines))
        if erased:
            self._forgetting.catch_up(self._client, erased)
        return landed

    def _forget(self, part: TableRows) -> TableRows:
        """The rows of users not erased."""
        if part.users is None:
            return part
        keep = self._forgetting.kept(part.users)
        return part if keep is None else part.take(keep)

    def _stored(self, key: str, table: str, source: str) -> int:
        """The last offset of `source` in `table`: the snapshot's, or ClickHouse's if ahead.

        ClickHouse can be ahead after a crash between an insert and the next snapshot; the
        replayed messages up to its offset are then dropped instead of inserted twice.
        """
        if key not in self._checked:
            self._settle()  # one query at a time on the client
            topic, partition = source.rsplit(":", 1)
            count, last = self._client.query(
                f"SELECT count(), max(offset) FROM `{table}` WHERE broker_epoch = {{e:String}} "
                "AND topic = {t:String} AND partition = {p:UInt16}",
                parameters={"e": self._settings.broker_epoch, "t": topic, "p": int(partition)},
            ).result_rows[0]
            stored = int(last) if count else -1
            snapshot = self._progress.get(key, -1)
            if stored > snapshot:
                log.warning(
                    "%s: ClickHouse holds offsets up to %d, the snapshot up to %d; "
                    "the replayed ones in between are skipped",
                    key,
                    stored,
                    snapshot,
                )
            self._progress[key] = max(snapshot, stored)
            self._checked.add(key)
        return self._progress.get(key, -1)

    def snapshot(self) -> Progress:
        self._flush()  # what the source's snapshot covers must be in ClickHouse first
        self._settle()
        return dict(self._progress)

    def close(self) -> None:
        self._flush()
        self._landed(self._inserts.close())


class ClickHouseProgressSink(FixedPartitionedSink[SourceRows, Progress]):
    """Exactly-once inserts: per table and source partition, only offsets past what is stored.

    Items are `(topic:partition, (topic:partition, [TableRows]))`. Each insert holds
    consecutive offsets of one source partition and carries the token
    `epoch:table:topic:partition:first:last`, so a retried insert is dropped by the table's
    dedup window; on resume the progress is checked against ClickHouse itself.
    """

    def __init__(
        self,
        settings: Settings,
        parts: int = 1,
        connect_clickhouse: Callable[[Settings], Client] = connect,
    ) -> None:
        self._settings = settings
        self._parts = parts
        self._connect = connect_clickhouse

    def list_parts(self) -> list[str]:
        return [f"clickhouse-{i}" for i in range(self._parts)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: Progress | None
    ) -> _ProgressPartition:
        return _ProgressPartition(self._settings, self._connect(self._settings), resume_state)
