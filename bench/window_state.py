"""Window state over time: what a features shard holds, and what its epoch snapshot costs.

    python bench/window_state.py --quick      # < 60 s; prints one JSON object

The soak found the features flow's snapshots growing with the run: Bytewax pickles every
shard's state each epoch while holding the GIL, so the API's p99 grew with them. This drives
one shard (all entities, as `shards=1`) the way the flow does, in event time and without a
broker: a batch every 0.5 s (the flow merges its buffer every `feature_emit_s`), windows
closed and the state snapshotted (deep copy, then pickle, as Bytewax does) every 5 s
(`flow_epoch_s`). Traffic is the soak's: 450 events/s from 5,000 users over 1,000 items.

Two variants in one run: `compacted` (the code as it is: buckets sum their entries per entity,
open tumbling windows sum or join their chunks, and rows are pickled once, later snapshots
copying those bytes) and `appended` (the earlier behaviour: every batch's entries kept until
read, open windows summed only at 200,000 rows, everything pickled at every snapshot). For
each simulated minute: the snapshot's size, the median and longest time to copy and pickle
it (Bytewax holds the GIL while it pickles: the API waits that long), and the state's memory
(`nbytes`).
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataflows.features import ShardState
from models import tumbling, windows
from models.counting import count_events
from models.items import ItemInfo, ItemTable
from swipeloop.contracts import ReceivedEvent

RATE = 450  # events/s (the soak's load: ~45 sessions/s of 10 swipes)
BATCH_S = 0.5  # the flow merges what it buffered every feature_emit_s
EPOCH_S = 5  # and Bytewax snapshots every flow_epoch_s
LATENESS_S = 10
KINDS = ("watch", "watch", "skip", "like", "loop")
START_S = 1_790_000_000


class Catalog(dict[str, ItemInfo]):
    """A fixed catalog of `n` items: 300 creators, 2-3 of 50 tags each."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        super().__init__()
        for i in range(n):
            tags = tuple(f"tag{t}" for t in rng.choice(50, int(rng.integers(2, 4)), False))
            self[f"i{i}"] = Known(f"c{i % 300}", int(rng.integers(5_000, 60_000)), tags)

    def changed(self, since: int) -> tuple[list[str], int]:
        return [], since


class Known:
    def __init__(self, creator_id: str, duration_ms: int, tags: tuple[str, ...]) -> None:
        self.creator_id, self.duration_ms, self.tags = creator_id, duration_ms, tags


def batch(k: int, rng: np.random.Generator, users: int, items: int) -> list[ReceivedEvent]:
    """The events of batch `k` (event time advances BATCH_S per batch)."""
    at = datetime.fromtimestamp(START_S + k * BATCH_S, UTC)
    n = int(RATE * BATCH_S)
    user, item = rng.integers(users, size=n), rng.zipf(1.3, size=n) % items
    kind, watch = rng.integers(len(KINDS), size=n), rng.integers(500, 30_000, size=n)
    return [
        ReceivedEvent(
            event_id=uuid.UUID(int=int(rng.integers(2**62))),
            user_id=f"user-{user[j]}",
            item_id=f"i{item[j]}",
            kind=KINDS[kind[j]],  # type: ignore[arg-type]
            client_ts=at,
            session_id=f"s{user[j]}",
            seq=k,
            watch_ms=int(watch[j]),
            received_at=at,
        )
        for j in range(n)
    ]


@contextmanager
def appended() -> Any:
    """The behaviour before compaction: entries kept per batch, windows summed at 200k rows."""
    saved = windows.SLOT_ENTRIES, tumbling.COMPACT_ROWS, tumbling.OPEN_CHUNKS
    windows.SLOT_ENTRIES, tumbling.COMPACT_ROWS, tumbling.OPEN_CHUNKS = 2**62, 200_000, 2**62
    reduce = tumbling.Rows.__reduce__
    del tumbling.Rows.__reduce__  # pickled anew at every snapshot
    try:
        yield
    finally:
        windows.SLOT_ENTRIES, tumbling.COMPACT_ROWS, tumbling.OPEN_CHUNKS = saved
        tumbling.Rows.__reduce__ = reduce  # type: ignore[method-assign]


def run(minutes: float, users: int, items: int) -> list[dict[str, float]]:
    """One shard driven for `minutes` of event time; figures per simulated minute."""
    rng = np.random.default_rng(0)
    table = ItemTable(Catalog(items, rng))
    state, newest, offset = ShardState("0"), None, 0
    per_minute: list[dict[str, float]] = []
    snapshots: list[tuple[float, int]] = []
    work_s = 0.0
    batches_per_epoch, batches_per_minute = int(EPOCH_S / BATCH_S), int(60 / BATCH_S)
    for k in range(int(minutes * 60 / BATCH_S)):
        events = [(offset + j, e) for j, e in enumerate(batch(k, rng, users, items))]
        offset += len(events)
        epoch_ends = (k + 1) % batches_per_epoch == 0
        started = time.perf_counter()
        newest, counted = count_events(events, newest, LATENESS_S, table)
        state.buffer(counted.tables)
        state.merge()
        if epoch_ends and counted.watermark_s is not None:
            state.close(counted.watermark_s)
        work_s += time.perf_counter() - started
        if epoch_ends:
            started = time.perf_counter()
            size = len(pickle.dumps(copy.deepcopy(state), protocol=pickle.HIGHEST_PROTOCOL))
            snapshots.append((time.perf_counter() - started, size))
        if (k + 1) % batches_per_minute == 0:
            per_minute.append(
                {
                    "snapshot_ms_p50": round(1000 * float(np.median([s for s, _ in snapshots])), 2),
                    "snapshot_ms_max": round(1000 * max(s for s, _ in snapshots), 2),
                    "snapshot_mb": round(snapshots[-1][1] / 2**20, 2),
                    "state_mb": round(state.nbytes() / 2**20, 2),
                    "merge_ms_per_batch": round(1000 * work_s / batches_per_minute, 2),
                }
            )
            snapshots, work_s = [], 0.0
    return per_minute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 60 s in all")
    parser.add_argument("--minutes", type=float, default=30.0, help="event time per variant")
    args = parser.parse_args()
    minutes = 6.0 if args.quick else args.minutes
    started = time.monotonic()
    compacted = run(minutes, 5_000, 1_000)
    with appended():
        before = run(minutes, 5_000, 1_000)
    print(
        json.dumps(
            {
                "minutes": minutes,
                "events_per_s": RATE,
                "compacted": compacted,
                "appended": before,
                "snapshot_ms_ratio_last_minute": round(
                    before[-1]["snapshot_ms_p50"] / compacted[-1]["snapshot_ms_p50"], 1
                ),
                "snapshot_growth_compacted": round(
                    compacted[-1]["snapshot_ms_p50"] / compacted[0]["snapshot_ms_p50"], 1
                ),
                "snapshot_growth_appended": round(
                    before[-1]["snapshot_ms_p50"] / before[0]["snapshot_ms_p50"], 1
                ),
                "wall_s": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
