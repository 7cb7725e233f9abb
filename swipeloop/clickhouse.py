"""ClickHouse clients: the same API for the chdb engine on disk and for a server over HTTP."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import clickhouse_connect
import numpy as np
import numpy.typing as npt
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from swipeloop.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


def connect(settings: Settings, database: str | None = None) -> Client:
    """A client on the settings' database (created if missing)."""
    db = settings.clickhouse_database if database is None else database
    if not settings.clickhouse_url:
        (settings.data_dir / "clickhouse").mkdir(parents=True, exist_ok=True)
    bootstrap = clickhouse_connect.get_client(dsn=settings.clickhouse_dsn)
    bootstrap.command(f"CREATE DATABASE IF NOT EXISTS `{db}`")
    return clickhouse_connect.get_client(dsn=settings.clickhouse_dsn, database=db)


def insert_rows(
    client: Client,
    table: str,
    rows: list[list[Any]],
    columns: list[str],
    token: str | None,
) -> None:
    """Insert a batch once: a retry with the same token is dropped by the table's dedup window."""
    if not rows:
        return
    settings = {"insert_deduplication_token": token} if token else None
    client.insert(table, rows, column_names=columns, settings=settings)


JSON_INSERT_SETTINGS = {
    "date_time_input_format": "best_effort",  # RFC 3339 with any UTC offset
    "input_format_skip_unknown_fields": 1,  # a newer contract field waits for its migration
}


def insert_lines(client: Client, table: str, lines: list[bytes], token: str | None) -> None:
    """Insert JSONEachRow lines once (ClickHouse parses them); a retry with the same token
    is dropped by the table's dedup window."""
    if not lines:
        return
    settings: dict[str, Any] = dict(JSON_INSERT_SETTINGS)
    if token:
        settings["insert_deduplication_token"] = token
    client.raw_insert(table, insert_block=b"\n".join(lines), fmt="JSONEachRow", settings=settings)


def read_vectors(
    client: Client, dim: int, table: str = "item_embeddings", own_only: bool = False
) -> tuple[list[str], npt.NDArray[np.float32]]:
    """The current vector of every id in `item_embeddings` or `user_embeddings` (ids,
    matrix) in one columnar read: the newest version, not expired; `own_only` leaves out
    cold-start stand-ins."""
    key = {"item_embeddings": "item_id", "user_embeddings": "user_id"}[table]
    cold = " AND cold = 0" if own_only else ""
    arrow = client.query_arrow(
        f"SELECT {key}, vector FROM {table} FINAL "  # names from the dict above, never input
        f"WHERE deleted = 0 AND length(vector) = {{dim:UInt32}}{cold}",
        parameters={"dim": dim},
    )
    ids = [str(i) for i in arrow.column(key).to_pylist()]
    if not ids:
        return [], np.zeros((0, dim), dtype=np.float32)
    flat = arrow.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ids, flat.astype(np.float32).reshape(len(ids), dim)


def with_retry(what: str, call: Callable[[], T]) -> T:
    """Call until ClickHouse answers, backing off while it is away (an insert's token makes a
    retry of one that landed a no-op)."""
    delay = 0.2
    while True:
        try:
            return call()
        except (OperationalError, DatabaseError) as exc:  # ClickHouse away: back off, keep it
            log.warning("ClickHouse %s failed (%s); retrying", what, exc)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
