"""What a serving state starts from: ClickHouse, read once at start.

A memory-only broker loses its topics on a restart; ClickHouse keeps the catalog, the
windowed features, the vectors and each user's recent history. `read_snapshot` turns its rows
into contracts, columns and item ids, `ServingState.bootstrap` applies them, and the feeder then
replays the user topics from `REPLAY_S` before, so nothing falls in between.

The catalog and the item vectors are read as Arrow columns, never as a Python object per row,
and Arrow's allocator hands what it freed back to the system after each read: it keeps freed
memory otherwise (at a million items, ~600 MB that a replica held for good).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_connect.driver.client import Client

from api.item_columns import NO_CODE, ItemRows
from models.features.counts import packed_counts
from models.features.weights import (
    COUNTERS,
    EARLY_SKIP_FRACTION,
    EARLY_SKIP_MS,
    PLAY_KINDS,
    POSITIVE_KINDS,
    POSITIVE_WATCH_MS,
)
from swipeloop.clickhouse import read_vectors
from swipeloop.contracts import ItemFeatures

REPLAY_S = 300  # the feeder re-reads this much of events and impressions before bootstrap
SEEN_DAYS = 30
COVISIT_HOURS = 24
CONTEXT_DAYS = 7  # plays read for the completion by network and length
Rows = Sequence[Sequence[Any]]  # a query's rows, as the client returns them

ITEMS_SQL = (
    "SELECT item_id, creator_id, duration_ms, tags, sound_id, created_at, deleted FROM items FINAL"
)
# each item's newest closed window of each length in the last day
FEATURES_SQL = (
    "SELECT item_id, window_s, argMax(tuple(window_end, "
    + ", ".join(COUNTERS)
    + "), window_end) FROM item_features FINAL "
    "WHERE window_end > now() - INTERVAL 1 DAY GROUP BY item_id, window_s"
)

# A user's recent history, aggregated in ClickHouse at bootstrap (one row per user). Seen:
# what any replica served, and what the phone says it showed (`impression` events).
USERS_SEEN_SQL = """
SELECT user_id, groupUniqArray(item_id)
FROM
(
    SELECT user_id, item_id FROM impressions WHERE served_at >= {since:DateTime64(3)}
    UNION ALL
    SELECT user_id, item_id FROM events
    WHERE kind = 'impression' AND client_ts >= {since:DateTime64(3)}
)
GROUP BY user_id
"""
USERS_SIGNALS_SQL = """
SELECT user_id,
       arrayMap(x -> (x.2, x.3), arraySort(x -> x.1, groupArrayIf((client_ts, item_id, kind),
           kind IN ('follow', 'unfollow', 'block', 'unblock')))),
       groupUniqArrayIf(item_id, kind = 'not_interested'),
       arraySlice(arrayMap(x -> x.2, arraySort(x -> x.1, groupArrayIf((client_ts, item_id),
           kind IN {positive:Array(String)}
           OR (kind = 'watch' AND watch_ms >= {positive_watch_ms:UInt32})))), -{keep:UInt32}),
       argMaxIf(context.network, client_ts, context.network != '')
FROM events WHERE client_ts >= {since:DateTime64(3)} AND kind != 'impression'
GROUP BY user_id
"""
# completion by network type and video length (models.features.context), from the plays of
# the last days that carried their phone's network
CONTEXT_SQL = """
SELECT e.context.network, i.duration_ms,
       sum(least(e.watch_ms / i.duration_ms, 1)), count()
FROM events AS e
INNER JOIN (SELECT item_id, duration_ms FROM items FINAL WHERE duration_ms > 0) AS i
    ON i.item_id = e.item_id
WHERE e.client_ts >= {since:DateTime64(3)} AND e.kind IN {plays:Array(String)}
  AND e.context.network != ''
GROUP BY e.context.network, i.duration_ms
"""

# Each user's videos watched past the early-skip mark in the last `COVISIT_HOURS`, in order,
# up to where the feeder's replay of the topics starts (counts are not idempotent, as sets are).
USERS_WATCHED_SQL = """
SELECT user_id, arrayMap(x -> x.2, arraySort(x -> x.1, groupArray((client_ts, e.item_id))))
FROM events AS e
LEFT JOIN (SELECT item_id, duration_ms FROM items FINAL) AS i ON i.item_id = e.item_id
WHERE e.client_ts >= {since:DateTime64(3)} AND e.received_at < {until:DateTime64(3)}
    AND e.kind IN {plays:Array(String)}
    AND e.watch_ms >= if(i.duration_ms > 0,
                         least({early_ms:UInt32}, {early_fraction:Float64} * i.duration_ms),
                         {early_ms:UInt32})
GROUP BY user_id
"""


def replay_start_ms() -> int:
    """Where the feeder starts replaying the user topics: `REPLAY_S` before now (epoch ms)."""
    return int((time.time() - REPLAY_S) * 1000)


@dataclass(frozen=True)
class CatalogRows:
    """`items FINAL` as columns: the ids, and each row's creator, tags and sound as positions
    in lists of distinct names (the state turns them into its codes)."""

    ids: list[str]
    creator_ids: list[str]
    tag_names: list[str]
    sound_ids: list[str]
    rows: ItemRows  # creator, tag and sound: positions in the lists above (sound: NO_CODE)


@dataclass(frozen=True)
class Snapshot:
    """What ClickHouse holds for a replica at start; users' history as item ids."""

    catalog: CatalogRows
    features: list[ItemFeatures]  # one per item with a window closed in the last day
    item_vectors: tuple[list[str], npt.NDArray[np.float32]]  # (ids, matrix), as stored
    user_vectors: tuple[list[str], npt.NDArray[np.float32]]
    seen: Rows  # (user, items shown)
    # (user, [(item, follow | unfollow | block | unblock)] oldest first, hidden, last positives,
    # the network their phone last reported)
    signals: Rows
    context: Rows  # (network, video length in ms, summed completion, plays)
    watched: Rows  # (user, items watched past the early skip, in order)


def read_snapshot(client: Client, dim: int, replay_from_ms: int, positives: int) -> Snapshot:
    """Read what a replica starts from: `positives` is how many of each user's last positive
    items to read, and `replay_from_ms` where the feeder's replay takes over counting."""
    since = datetime.now(UTC) - timedelta(days=SEEN_DAYS)
    catalog = read_catalog(client)
    feats = client.query(FEATURES_SQL).result_rows
    item_vectors = released(read_vectors(client, dim))
    user_vectors = released(read_vectors(client, dim, "user_embeddings"))
    seen = client.query(USERS_SEEN_SQL, parameters={"since": since}).result_rows
    signals = client.query(
        USERS_SIGNALS_SQL,
        parameters={
            "since": since,
            "positive": sorted(POSITIVE_KINDS),
            "positive_watch_ms": POSITIVE_WATCH_MS,
            "keep": positives,
        },
    ).result_rows
    context = client.query(
        CONTEXT_SQL,
        parameters={
            "since": datetime.now(UTC) - timedelta(days=CONTEXT_DAYS),
            "plays": sorted(PLAY_KINDS),
        },
    ).result_rows
    watched = client.query(
        USERS_WATCHED_SQL,
        parameters={
            "since": datetime.now(UTC) - timedelta(hours=COVISIT_HOURS),
            "until": datetime.fromtimestamp(replay_from_ms / 1000, UTC),
            "plays": sorted(PLAY_KINDS),
            "early_ms": EARLY_SKIP_MS,
            "early_fraction": EARLY_SKIP_FRACTION,
        },
    ).result_rows
    return Snapshot(
        catalog=catalog,
        features=_features(feats),
        item_vectors=item_vectors,
        user_vectors=user_vectors,
        seen=seen,
        signals=signals,
        context=context,
        watched=watched,
    )


def read_catalog(client: Client) -> CatalogRows:
    """The catalog as columns (one Arrow read; names dictionary-encoded, not a string per row)."""
    table = client.query_arrow(ITEMS_SQL)
    try:
        creators = _encoded(table.column("creator_id"))
        sounds = _encoded(table.column("sound_id"))
        tag_lists = table.column("tags").combine_chunks()
        offsets = tag_lists.offsets.to_numpy().astype(np.int64)
        tags = _encoded(tag_lists.flatten())
        sound_ids = sounds.dictionary.to_pylist()
        sound = sounds.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        if "" in sound_ids:  # (no sound)
            sound[sound == sound_ids.index("")] = NO_CODE
        return CatalogRows(
            ids=table.column("item_id").to_pylist(),
            creator_ids=creators.dictionary.to_pylist(),
            tag_names=tags.dictionary.to_pylist(),
            sound_ids=sound_ids,
            rows=ItemRows(
                creator=creators.indices.to_numpy(zero_copy_only=False).astype(np.int64),
                tag_starts=offsets - offsets[0],
                tag=tags.indices.to_numpy(zero_copy_only=False).astype(np.int64),
                sound=sound,
                created_s=table.column("created_at").cast(pa.int64()).to_numpy() / 1000,
                duration_ms=table.column("duration_ms").to_numpy().astype(np.float64),
                deleted=table.column("deleted").to_numpy(zero_copy_only=False).astype(np.bool_),
            ),
        )
    finally:
        del table
        pa.default_memory_pool().release_unused()


def _encoded(column: pa.ChunkedArray | pa.Array) -> pa.DictionaryArray:
    """A string column as distinct values and each row's position among them."""
    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    assert isinstance(encoded, pa.DictionaryArray)
    return encoded


def released(
    vectors: tuple[list[str], npt.NDArray[np.float32]],
) -> tuple[list[str], npt.NDArray[np.float32]]:
    """What `read_vectors` returned, once Arrow has handed back the memory it read them with."""
    pa.default_memory_pool().release_unused()
    return vectors


def _features(rows: Rows) -> list[ItemFeatures]:
    """Each item's windows, one `ItemFeatures` per item."""
    windows: dict[str, list[tuple[int, datetime, list[float]]]] = {}
    for item_id, window_s, (end, *counts) in rows:
        windows.setdefault(item_id, []).append((window_s, end.replace(tzinfo=UTC), counts))
    return [
        ItemFeatures(
            item_id=item_id,
            as_of=max(end for _, end, _ in closed),
            window_s=[length for length, _, _ in closed],
            window_end=[end for _, end, _ in closed],
            counts=packed_counts(np.array([counts for _, _, counts in closed])),
        )
        for item_id, closed in windows.items()
    ]
