"""What a serving state starts from: ClickHouse, read once at start.

A memory-only broker loses its topics on a restart; ClickHouse keeps the catalog, the
windowed features, the vectors and each user's recent history. `read_snapshot` turns its rows
into contracts and item ids, `ServingState.bootstrap` applies them, and the feeder then
replays the user topics from `REPLAY_S` before, so nothing falls in between.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from clickhouse_connect.driver.client import Client

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
from swipeloop.contracts import Item, ItemFeatures

REPLAY_S = 300  # the feeder re-reads this much of events and impressions before bootstrap
SEEN_DAYS = 30
COVISIT_HOURS = 24
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
       groupUniqArrayIf(item_id, kind = 'block'),
       groupUniqArrayIf(item_id, kind = 'follow'),
       groupUniqArrayIf(item_id, kind = 'not_interested'),
       arraySlice(arrayMap(x -> x.2, arraySort(x -> x.1, groupArrayIf((client_ts, item_id),
           kind IN {positive:Array(String)}
           OR (kind = 'watch' AND watch_ms >= {positive_watch_ms:UInt32})))), -{keep:UInt32})
FROM events WHERE client_ts >= {since:DateTime64(3)} AND kind != 'impression'
GROUP BY user_id
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
class Snapshot:
    """What ClickHouse holds for a replica at start; users' history as item ids."""

    items: list[Item]
    features: list[ItemFeatures]  # one per item with a window closed in the last day
    item_vectors: tuple[list[str], npt.NDArray[np.float32]]  # (ids, matrix), as stored
    user_vectors: tuple[list[str], npt.NDArray[np.float32]]
    seen: Rows  # (user, items shown)
    signals: Rows  # (user, items of blocked and of followed creators, hidden, last positives)
    watched: Rows  # (user, items watched past the early skip, in order)


def read_snapshot(client: Client, dim: int, replay_from_ms: int, positives: int) -> Snapshot:
    """Read what a replica starts from: `positives` is how many of each user's last positive
    items to read, and `replay_from_ms` where the feeder's replay takes over counting."""
    since = datetime.now(UTC) - timedelta(days=SEEN_DAYS)
    items = client.query(ITEMS_SQL).result_rows
    feats = client.query(FEATURES_SQL).result_rows
    item_vectors = read_vectors(client, dim)
    user_vectors = read_vectors(client, dim, "user_embeddings")
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
        items=[_item(row) for row in items],
        features=_features(feats),
        item_vectors=item_vectors,
        user_vectors=user_vectors,
        seen=seen,
        signals=signals,
        watched=watched,
    )


def _item(row: Sequence[Any]) -> Item:
    item_id, creator, duration, tags, sound, created, deleted = row
    return Item(
        item_id=item_id,
        creator_id=creator,
        duration_ms=duration,
        tags=list(tags),
        sound_id=sound or None,
        created_at=created.replace(tzinfo=UTC),
        deleted=bool(deleted),
    )


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
