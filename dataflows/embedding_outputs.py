"""What the embeddings flow writes of a publication: topic messages and ClickHouse rows,
each with a version that only goes up."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from dataflows.io.kafka_sink import Keyed, to_kafka
from dataflows.io.rows import Rows
from models.learning import Published
from swipeloop import topics
from swipeloop.contracts import ItemVector, UserVector

_encoder = msgspec.json.Encoder()


class Versions:
    """Versions that only go up (milliseconds, one more than the last if the clock lags),
    for the workers of a process alike."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns() // 1_000_000)
            return self._last


def messages(published: Published, version: int, now: datetime) -> list[tuple[str, Keyed]]:
    """(topic, keyed message) of every change: vectors, and tombstones for expired ids."""
    out: list[tuple[str, Keyed]] = []
    encode = _encoder.encode
    for item, vector, cold in zip(
        published.items, published.item_vectors, published.item_cold, strict=True
    ):
        body = ItemVector(
            item_id=item, version=version, updated_at=now, vector=vector.tolist(), cold=cold
        )
        out.append((topics.ITEM_VECTORS, to_kafka(item, encode(body))))
    for user, vector, cold in zip(
        published.users, published.user_vectors, published.user_cold, strict=True
    ):
        body_u = UserVector(
            user_id=user, version=version, updated_at=now, vector=vector.tolist(), cold=cold
        )
        out.append((topics.USER_VECTORS, to_kafka(user, encode(body_u))))
    out.extend((topics.ITEM_VECTORS, to_kafka(i, None)) for i in published.expired_items)
    out.extend((topics.USER_VECTORS, to_kafka(u, None)) for u in published.expired_users)
    return out


def vector_rows(
    table: str,
    key_column: str,
    ids: list[str],
    vectors: list[Any],
    cold: list[bool],
    expired: list[str],
    version: int,
    now: datetime,
    dim: int,
) -> Rows | None:
    """One Arrow table of versioned vectors (expired ids: deleted, empty vector)."""
    if not ids and not expired:
        return None
    flat = np.concatenate([*vectors, np.zeros(0, np.float32)]).astype(np.float32)
    sizes = [dim] * len(ids) + [0] * len(expired)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    n = len(ids) + len(expired)
    arrow = pa.table(
        {
            key_column: pa.array([*ids, *expired], pa.string()),
            "version": pa.array(np.full(n, version, np.uint64)),
            "updated_at": pa.array([now] * n, pa.timestamp("ms", tz="UTC")),
            "vector": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)),
            "cold": pa.array(np.r_[np.asarray(cold, bool), np.zeros(len(expired), bool)]).cast(
                pa.uint8()
            ),
            "deleted": pa.array(np.r_[np.zeros(len(ids), bool), np.ones(len(expired), bool)]).cast(
                pa.uint8()
            ),
        }
    )
    return Rows(table, arrow.column_names, [], arrow=arrow)


def table_rows(published: Published, version: int, now: datetime, dim: int) -> list[Rows]:
    """The publication's rows of `item_embeddings` and `user_embeddings` (none if nothing
    changed there)."""
    p = published
    out = [
        vector_rows(
            "item_embeddings",
            "item_id",
            p.items,
            p.item_vectors,
            p.item_cold,
            p.expired_items,
            version,
            now,
            dim,
        ),
        vector_rows(
            "user_embeddings",
            "user_id",
            p.users,
            p.user_vectors,
            p.user_cold,
            p.expired_users,
            version,
            now,
            dim,
        ),
    ]
    return [r for r in out if r is not None]
