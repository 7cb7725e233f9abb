"""Batched inserts of `Rows` into ClickHouse that recovery waits for.

`CommittedClickHouseSink` takes part in snapshots, so an epoch is not committed before its
rows are stored; it merges a batch per table and drops the rows of erased users.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pyarrow as pa
from bytewax.outputs import (
    FixedPartitionedSink,
    StatefulSinkPartition,
)
from clickhouse_connect.driver.client import Client

from dataflows.forget import Forgetting
from dataflows.io.in_flight import OneInFlight
from dataflows.io.rows import Rows
from swipeloop.clickhouse import connect, insert_rows, with_retry
from swipeloop.settings import Settings


class _CommittedPartition(StatefulSinkPartition[Rows, int]):
    """Writes each batch before its epoch can be committed (it takes part in snapshots).

    The insert runs on a thread, so the flow goes on meanwhile (a closed window's rows do
    not hold back the live windows); one batch is in flight at a time, and a snapshot waits
    for it."""

    def __init__(self, client: Client, written: int, cluster: str) -> None:
        self._client = client
        self._written = written
        self._inserts: OneInFlight[None] = OneInFlight("clickhouse-insert")
        self._forgetting = Forgetting(cluster)

    def write_batch(self, items: list[Rows]) -> None:
        self._inserts.submit(write_rows, self._client, items, self._forgetting)
        self._written += len(items)

    def snapshot(self) -> int:
        self._inserts.settle()
        return self._written

    def close(self) -> None:
        self._inserts.close()


class CommittedClickHouseSink(FixedPartitionedSink[Rows, int]):
    """Inserts that a recovery snapshot waits for. A stateless sink does not hold back the
    epoch's commit: state snapshotted after emitting rows could outlive rows lost in a crash.
    Items are `(any key, Rows)`, a key's rows always through the same partition: one per
    worker of the flow's cluster, so every worker inserts (one worker: one partition, named
    as before clusters). Rows must be idempotent (a replay repeats them): ReplacingMergeTree
    tables."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._parts = cluster_workers(settings)

    def list_parts(self) -> list[str]:
        return (
            ["clickhouse"] if self._parts == 1 else [f"clickhouse-{i}" for i in range(self._parts)]
        )

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        settings = self._settings
        return _CommittedPartition(
            connect(settings), resume_state or 0, settings.clickhouse_cluster
        )


def cluster_workers(settings: Settings) -> int:
    """Workers in the flow's cluster, all processes together (a sink partition for each)."""
    return settings.flow_processes * settings.flow_workers


def write_rows(client: Client, items: list[Rows], forgetting: Forgetting | None = None) -> None:
    """Insert batches, merged per table (batches with a dedup token are kept whole); with
    `forgetting`, less the rows of erased users, and then what landed of them before."""
    new = forgetting.learn(client) if forgetting else set()
    arrow: dict[str, list[Any]] = {}
    merged: dict[tuple[str, str | None], Rows] = {}
    for rows in items:
        if rows.arrow is not None:
            arrow.setdefault(rows.table, []).append(rows.arrow)
            continue
        key = (rows.table, rows.token)
        if key in merged:
            merged[key].rows.extend(rows.rows)
        else:
            merged[key] = Rows(rows.table, rows.columns, list(rows.rows), rows.token)
    for rows in merged.values():
        kept = forgetting.rows(rows.columns, rows.rows) if forgetting else rows.rows
        with_retry(
            f"insert into {rows.table}",
            partial(insert_rows, client, rows.table, kept, rows.columns, rows.token),
        )
    for table, tables in arrow.items():
        whole = pa.concat_tables(tables)
        whole = forgetting.arrow(whole) if forgetting else whole
        with_retry(f"insert into {table}", partial(client.insert_arrow, table, whole))
    if forgetting and new:
        forgetting.catch_up(client, new)
