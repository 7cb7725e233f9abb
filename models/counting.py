"""Phase one of the feature windows: a batch of events becomes counter rows per table (pure).

Each event is counted for its item, its creator, its user, and the user's affinity to the
creator and to each of the item's tags. Rows of the same (entity, second) in one batch are
summed first: a batch read from one source partition is the salt, so a viral item costs
one row per batch and partition, not one per event; phase two merges the partial sums of
all partitions per entity.

Everything past reading the events' fields is numpy: entities get integer codes (items,
creators and tags persistent, in `models.items.ItemTable`; users per batch), each table is
one sort of (code, second) and one `reduceat`, and a string is hashed to its stable id once
per distinct entity, not once per event. Phase two is `models.windows` (items, creators) and
`models.tumbling` (users, affinities).

An event older than the partition's watermark (the newest second seen on it, minus the
allowed lateness) is late: it is returned apart, to be recorded, and counted nowhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter

import numpy as np

from models.features.weights import COUNTERS, affinity_weights, engagement_matrix, kind_codes
from models.items import ItemTable, Names, mix
from models.rows import concat_rows, run_starts, take_rows
from swipeloop.arrays import Floats, Ids, Ints, UInts
from swipeloop.contracts import ReceivedEvent

ENGAGEMENT_TABLES = ("item", "creator", "user")
AFFINITY_TABLES = ("user_creator", "user_tag")
TABLES = ENGAGEMENT_TABLES + AFFINITY_TABLES
AFFINITY_COUNTERS = ("weight", "events")


def width(table: str) -> int:
    """How many counters a table's rows have."""
    return len(COUNTERS) if table in ENGAGEMENT_TABLES else len(AFFINITY_COUNTERS)


def seconds_of(stamps: Iterable[datetime], count: int) -> Ints:
    """Whole seconds since the epoch, floored (a float64 holds a microsecond timestamp of
    this era to 0.3 µs, so the floor is exact)."""
    return np.floor(np.fromiter((t.timestamp() for t in stamps), np.float64, count)).astype(
        np.int64
    )


def pair_ids(users: UInts, targets: UInts) -> UInts:
    """A 64-bit id per (user, target) from theirs."""
    return mix(users * np.uint64(0x9E3779B97F4A7C15) + targets)


@dataclass
class Counts:
    """Rows of one table: entity id and key (for an affinity, the user's key and the
    target's), event second, summed counters, and the shard of phase two it belongs to."""

    ids: UInts
    keys: Ids
    targets: Ids | None
    seconds: Ints
    sums: Floats
    shards: Ints

    def take(self, at: Ints | slice) -> Counts:
        """The rows at the positions `at` (a slice: views, no copy)."""
        return take_rows(self, at)

    @staticmethod
    def concat(parts: list[Counts]) -> Counts:
        """The rows of several batches as one."""
        return concat_rows(parts)

    def by_shard(self) -> dict[int, Counts]:
        """The rows split by shard (one reordering, then a slice per shard)."""
        if not len(self.shards):
            return {}
        if self.shards.min() == self.shards.max():
            return {int(self.shards[0]): self}
        ordered = self.take(np.argsort(self.shards, kind="stable"))
        starts = run_starts(ordered.shards)
        ends = np.r_[starts[1:], len(ordered.shards)]
        return {
            int(ordered.shards[a]): ordered.take(slice(a, b))
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
        }


@dataclass
class Late:
    """An event that came after its partition's watermark had passed it."""

    event: ReceivedEvent
    offset: int
    watermark_s: int


@dataclass
class Counted:
    """A batch, counted: rows per table, the late events, and the watermark after it."""

    watermark_s: int | None
    tables: dict[str, Counts] = field(default_factory=dict)
    late: list[Late] = field(default_factory=list)


def group_sum(codes: Ints, seconds: Ints, values: Floats) -> tuple[Ints, Ints, Floats]:
    """Sum `values` per distinct (code, second): the codes, the seconds and the sums, ordered
    by code then second."""
    base = int(seconds.min())
    span = int(seconds.max()) - base + 1
    composite = codes * span + (seconds - base)
    order = np.argsort(composite, kind="stable")
    ordered = composite[order]
    starts = run_starts(ordered)
    if len(starts) == len(order):  # all distinct (uniform traffic): nothing to add up
        sums, first = values[order], ordered
    else:
        sums, first = np.add.reduceat(values[order], starts, axis=0), ordered[starts]
    return first // span, first % span + base, sums


_FIELDS = attrgetter("item_id", "user_id", "kind", "watch_ms")  # one pass over the events


def _counts(codes: Ints, seconds: Ints, values: Floats, names: Names, shards: int) -> Counts:
    """One table's rows, summed per (entity, second)."""
    code, second, sums = group_sum(codes, seconds, values)
    ids = names.ids[code]
    shard = (ids % np.uint64(shards)).astype(np.int64)
    return Counts(ids, names.keys[code], None, second, sums, shard)


def _pair_counts(
    users: Ints,
    targets: Ints,
    seconds: Ints,
    values: Floats,
    user_names: Names,
    target_names: Names,
    shards: int,
) -> Counts:
    """An affinity table's rows, summed per (user, target, second), in their user's shard."""
    n_targets = len(target_names.keys)
    code, second, sums = group_sum(users * n_targets + targets, seconds, values)
    user, target = code // n_targets, code % n_targets
    user_ids = user_names.ids[user]
    return Counts(
        pair_ids(user_ids, target_names.ids[target]),
        user_names.keys[user],
        target_names.keys[target],
        second,
        sums,
        (user_ids % np.uint64(shards)).astype(np.int64),
    )


def _tables(
    events: list[ReceivedEvent],
    seconds: Ints,
    table: ItemTable,
    shards: int,
) -> dict[str, Counts]:
    n = len(events)
    item_ids, user_ids, kinds, watched = zip(*map(_FIELDS, events), strict=True)
    users = Names()  # this batch's: users are too many to keep codes for
    item = table.codes(item_ids)
    user = users.codes_of(user_ids)
    codes = kind_codes(kinds)
    watch_ms = np.array(watched, dtype=np.float64)

    duration_ms = table.duration.view()[item]
    engagement = engagement_matrix(codes, watch_ms, duration_ms)
    affinity = np.column_stack((affinity_weights(codes, watch_ms, duration_ms), np.ones(n)))
    out = {
        "item": _counts(item, seconds, engagement, table.items, shards),
        "user": _counts(user, seconds, engagement, users, shards),
    }
    creator = table.creator.view()[item]
    has = np.flatnonzero(creator >= 0)  # an item not in the catalog yet has no creator
    if len(has):
        creators = table.creators
        out["creator"] = _counts(creator[has], seconds[has], engagement[has], creators, shards)
        out["user_creator"] = _pair_counts(
            user[has], creator[has], seconds[has], affinity[has], users, creators, shards
        )
    event, tag = table.tags_of(item)
    if len(event):  # one row per (event, tag of its item)
        out["user_tag"] = _pair_counts(
            user[event], tag, seconds[event], affinity[event], users, table.tags, shards
        )
    return out


def count_events(
    events: list[tuple[int, ReceivedEvent]],
    newest_s: int | None,
    lateness_s: int,
    items: ItemTable,
    shards: int = 1,
) -> tuple[int | None, Counted]:
    """Count one partition's batch (offset, event) in order; returns the newest second seen
    (the partition's state) and the rows, each marked with its entity's shard of `shards`
    (an affinity goes with its user)."""
    if not events:
        return newest_s, Counted(None if newest_s is None else newest_s - lateness_s)
    seconds = seconds_of((ev.client_ts for _, ev in events), len(events))
    # the newest second before each event: the partition's watermark when it arrived
    start = seconds[0] if newest_s is None else newest_s
    before = np.maximum.accumulate(np.r_[start, seconds[:-1]])
    late = seconds < before - lateness_s
    newest = int(max(before[-1], seconds[-1]))
    counted = Counted(newest - lateness_s)
    if late.any():
        counted.late = [
            Late(events[i][1], events[i][0], int(before[i]) - lateness_s)
            for i in np.flatnonzero(late).tolist()
        ]
        on_time = np.flatnonzero(~late)
        kept = [events[i][1] for i in on_time.tolist()]
        seconds = seconds[on_time]
    else:
        kept = [ev for _, ev in events]
    if kept:
        with items.lock:
            counted.tables = _tables(kept, seconds, items, shards)
    return newest, counted
