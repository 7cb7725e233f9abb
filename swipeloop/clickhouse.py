"""ClickHouse clients: the same API for the chdb engine on disk and for a server over HTTP."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import clickhouse_connect
import numpy as np
import numpy.typing as npt
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    IntegrityError,
    InternalError,
    NotSupportedError,
    ProgrammingError,
)
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from swipeloop.cluster import named, on_cluster
from swipeloop.extras import require
from swipeloop.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


def connect(settings: Settings, database: str | None = None) -> Client:
    """A client on the settings' database (created if missing)."""
    db = settings.clickhouse_database if database is None else database
    if not settings.clickhouse_url:
        require("chdb", "embedded", "ClickHouse on disk (unless SWIPELOOP_CLICKHOUSE_URL is set)")
        (settings.data_dir / "clickhouse").mkdir(parents=True, exist_ok=True)
    bootstrap = _bootstrap_client(settings.clickhouse_dsn)
    on = named(settings.clickhouse_cluster, db)
    bootstrap.command(on_cluster(f"CREATE DATABASE IF NOT EXISTS `{db}`", on))
    # on a cluster an insert returns once every shard holds its rows, as on one server (what
    # a sink's epoch waits for), not once they are queued on the host that took it
    inserts = {"distributed_foreground_insert": 1} if on else None
    client = clickhouse_connect.get_client(
        dsn=settings.clickhouse_dsn, database=db, settings=inserts
    )
    if settings.clickhouse_dsn.startswith("chdb:"):
        with _BOOTSTRAP_LOCK:
            _CHDB_CLIENTS.append(client)  # see _bootstrap_client: never closed by the collector
    return client


_BOOTSTRAP: dict[str, Client] = {}
_BOOTSTRAP_LOCK = threading.Lock()
_CHDB_CLIENTS: list[Client] = []  # every chdb client made, kept for the process's life


def _bootstrap_client(dsn: str) -> Client:
    """One client per DSN that creates databases, kept for the process's life. A dropped
    client is closed whenever the collector gets to it, and closing a chdb connection can
    wait forever on the queries other threads run on the same path (a flow process of a
    cluster hung there, in a worker thread), so chdb clients are never dropped: a process
    makes a few, at start."""
    with _BOOTSTRAP_LOCK:
        if dsn not in _BOOTSTRAP:
            _BOOTSTRAP[dsn] = clickhouse_connect.get_client(dsn=dsn)
        return _BOOTSTRAP[dsn]


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


# Server error codes that say ClickHouse is busy or briefly away, not that the statement is
# wrong: both engines raise a plain DatabaseError for every server error, so the code decides.
TRANSIENT_CODES = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        279,  # ALL_CONNECTION_TRIES_FAILED
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        425,  # SYSTEM_ERROR
        473,  # DEADLOCK_AVOIDED
        999,  # KEEPER_EXCEPTION
    }
)


class StatementError(DatabaseError):
    """A statement ClickHouse refused (a bug in it or in its data): retrying cannot help."""


# what no retry can mend (a StatementError too: one with_retry inside another's call)
_BUGS = (
    ProgrammingError,
    DataError,
    IntegrityError,
    InternalError,
    NotSupportedError,
    StatementError,
)


def transient(exc: BaseException) -> bool:
    """Whether `exc` says ClickHouse is away or busy (retry) rather than refusing the statement."""
    if not isinstance(exc, DatabaseError) or isinstance(exc, _BUGS):
        return False
    if exc.code is None:  # no answer from ClickHouse itself: the transport, or a proxy before it
        return True
    return exc.code in TRANSIENT_CODES


def _statement_of(exc: BaseException, width: int = 80) -> str | None:
    """The start of the SQL (or the table inserted into) of the client call that raised `exc`."""
    # clickhouse-connect's errors do not carry their statement; the public method of the client
    # that the call entered (the outermost clickhouse_connect frame) holds it as an argument.
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if str(frame.f_globals.get("__name__", "")).startswith("clickhouse_connect."):
            args = frame.f_locals
            sql = args.get("query", args.get("cmd"))
            if isinstance(sql, str):
                return " ".join(sql.split())[:width]
            table = args.get("table")
            return f"INSERT INTO {table}" if isinstance(table, str) else None
        tb = tb.tb_next
    return None


def with_retry(what: str, call: Callable[[], T]) -> T:
    """Call until ClickHouse answers, backing off while it is away or busy (an insert's token
    makes a retry of one that landed a no-op); a statement it refuses fails at once, named."""

    def warn(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("ClickHouse %s failed (%s); retrying", what, exc)

    retrying = Retrying(
        retry=retry_if_exception(transient),
        # full jitter: the sinks of every worker back off from the same outage
        wait=wait_random_exponential(multiplier=0.2, max=10.0),
        before_sleep=warn,
        reraise=True,
    )
    try:
        return retrying(call)
    except StatementError:
        raise
    except DatabaseError as exc:  # not transient: those are retried until they pass
        statement = _statement_of(exc)
        on = f" ({statement})" if statement else ""
        raise StatementError(
            f"ClickHouse {what} failed{on}: {exc}", code=exc.code, name=exc.name
        ) from exc
