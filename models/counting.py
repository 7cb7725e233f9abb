"""Phase one of the feature windows: a batch of events becomes counter rows per table (pure).

Each event is counted for its item, its creator, its user, and the user's affinity to the
creator and to each of the item's tags. Rows of the same (entity, second) in one batch are
summed first: a batch read from one source partition is the salt, so a viral item costs
one row per batch and partition, not one per event; phase two (`models.windows`) merges
the partial sums of all partitions per entity.

Everything past reading the events' fields is numpy: entities get batch-local integer
codes, each table is one sort of (code, second) and one `reduceat`, and a row's key is
looked up once per distinct entity, not once per event.

An event older than the partition's watermark (the newest second seen on it, minus the
allowed lateness) is late: it is returned apart, to be recorded, and counted nowhere.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Protocol

import numpy as np
import numpy.typing as npt

from models.features import COUNTERS, affinity_weights, engagement_matrix, kind_codes
from swipeloop.contracts import ReceivedEvent

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Keys = npt.NDArray[np.object_]  # entity keys: a str, or (user_id, target) for affinities

ENGAGEMENT_TABLES = ("item", "creator", "user")
AFFINITY_TABLES = ("user_creator", "user_tag")
TABLES = ENGAGEMENT_TABLES + AFFINITY_TABLES
AFFINITY_COUNTERS = ("weight", "events")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


class ItemInfo(Protocol):
    """What counting needs to know of an item."""

    @property
    def creator_id(self) -> str: ...
    @property
    def duration_ms(self) -> int: ...
    @property
    def tags(self) -> tuple[str, ...]: ...


def width(table: str) -> int:
    """How many counters a table's rows have."""
    return len(COUNTERS) if table in ENGAGEMENT_TABLES else len(AFFINITY_COUNTERS)


def second_of(ts: datetime) -> int:
    """Whole seconds since the epoch (floor)."""
    return (ts - _EPOCH) // _SECOND


def keys_of(values: Iterable[Hashable], count: int) -> Keys:
    """A 1-d object array of keys (tuples stay whole, one per slot)."""
    return np.fromiter(values, dtype=object, count=count)


@dataclass
class Counts:
    """Rows of one table: entity key, event second, summed counters, and the shard of phase
    two that the entity belongs to."""

    keys: Keys
    seconds: Ints
    sums: Floats
    shards: Ints

    def take(self, at: Ints) -> Counts:
        """The rows at the positions `at`."""
        return Counts(self.keys[at], self.seconds[at], self.sums[at], self.shards[at])

    def by_shard(self) -> dict[int, Counts]:
        """The rows split by shard."""
        if not len(self.shards) or self.shards.min() == self.shards.max():
            return {int(self.shards[0]): self} if len(self.shards) else {}
        order = np.argsort(self.shards, kind="stable")
        ordered = self.shards[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        ends = np.r_[starts[1:], len(order)]
        return {
            int(ordered[a]): self.take(order[a:b])
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
        }


def shard_of(key: str, shards: int) -> int:
    """A stable shard for an entity id (the same in every process and run)."""
    return zlib.crc32(key.encode()) % shards


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
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sums = np.add.reduceat(values[order], starts, axis=0)
    first = ordered[starts]
    return first // span, first % span + base, sums


class _Codes(dict[str, int]):
    """Batch-local integer codes for distinct strings, in order of first appearance."""

    def of(self, values: Iterable[str], count: int) -> Ints:
        return np.fromiter((self.setdefault(v, len(self)) for v in values), np.int64, count)

    def keys_array(self) -> Keys:
        return keys_of(self, len(self))

    def shards(self, shards: int) -> Ints:
        """The shard of each distinct string, by code."""
        if shards == 1:
            return np.zeros(len(self), dtype=np.int64)
        return np.fromiter((shard_of(k, shards) for k in self), np.int64, len(self))


def _counts(codes: Ints, seconds: Ints, values: Floats, keys: Keys, shards: Ints) -> Counts:
    """One table's rows, keyed by the batch-local code of their entity."""
    code, second, sums = group_sum(codes, seconds, values)
    return Counts(keys[code], second, sums, shards[code])


def _pair_counts(
    users: Ints,
    targets: Ints,
    seconds: Ints,
    values: Floats,
    user_keys: Keys,
    target_keys: Keys,
    user_shards: Ints,
) -> Counts:
    """An affinity table's rows, keyed (user_id, target), in the shard of their user."""
    n_targets = len(target_keys)
    code, second, sums = group_sum(users * n_targets + targets, seconds, values)
    user, target = code // n_targets, code % n_targets
    pairs = zip(user_keys[user], target_keys[target], strict=True)
    return Counts(keys_of(pairs, len(code)), second, sums, user_shards[user])


def _tables(
    events: list[ReceivedEvent],
    seconds: Ints,
    lookup: Callable[[str], ItemInfo | None],
    shards: int,
) -> dict[str, Counts]:
    n = len(events)
    items, users, creators, tags = _Codes(), _Codes(), _Codes(), _Codes()
    item = items.of((e.item_id for e in events), n)
    user = users.of((e.user_id for e in events), n)
    codes = kind_codes([e.kind for e in events])
    watch_ms = np.fromiter((e.watch_ms for e in events), np.float64, n)

    known = [lookup(item_id) for item_id in items]  # once per distinct item
    duration_of = np.array([k.duration_ms if k else 0 for k in known], dtype=np.float64)
    creator_of = np.array(
        [creators.setdefault(k.creator_id, len(creators)) if k else -1 for k in known],
        dtype=np.int64,
    )
    tag_lists = [[tags.setdefault(t, len(tags)) for t in k.tags] if k else [] for k in known]
    tags_of = np.array([len(t) for t in tag_lists], dtype=np.int64)
    first_tag = np.cumsum(tags_of) - tags_of
    tag_codes = np.fromiter(chain.from_iterable(tag_lists), np.int64, int(tags_of.sum()))

    duration_ms = duration_of[item]
    engagement = engagement_matrix(codes, watch_ms, duration_ms)
    affinity = np.column_stack((affinity_weights(codes, watch_ms, duration_ms), np.ones(n)))
    user_keys, user_shards = users.keys_array(), users.shards(shards)
    out = {
        "item": _counts(item, seconds, engagement, items.keys_array(), items.shards(shards)),
        "user": _counts(user, seconds, engagement, user_keys, user_shards),
    }
    creator = creator_of[item]
    has = np.flatnonzero(creator >= 0)  # an item not in the catalog yet has no creator
    if len(has):
        creator_keys = creators.keys_array()
        out["creator"] = _counts(
            creator[has], seconds[has], engagement[has], creator_keys, creators.shards(shards)
        )
        out["user_creator"] = _pair_counts(
            user[has],
            creator[has],
            seconds[has],
            affinity[has],
            user_keys,
            creator_keys,
            user_shards,
        )
    per_event = tags_of[item]
    if per_event.any():  # one row per (event, tag of its item)
        event = np.repeat(np.arange(n), per_event)
        nth = np.arange(len(event)) - np.repeat(np.cumsum(per_event) - per_event, per_event)
        tag = tag_codes[first_tag[item[event]] + nth]
        out["user_tag"] = _pair_counts(
            user[event],
            tag,
            seconds[event],
            affinity[event],
            user_keys,
            tags.keys_array(),
            user_shards,
        )
    return out


def count_events(
    events: list[tuple[int, ReceivedEvent]],
    newest_s: int | None,
    lateness_s: int,
    lookup: Callable[[str], ItemInfo | None],
    shards: int = 1,
) -> tuple[int | None, Counted]:
    """Count one partition's batch (offset, event) in order; returns the newest second seen
    (the partition's state) and the rows, each marked with its entity's shard of `shards`
    (an affinity goes with its user)."""
    if not events:
        return newest_s, Counted(None if newest_s is None else newest_s - lateness_s)
    seconds = np.fromiter((second_of(ev.client_ts) for _, ev in events), np.int64, len(events))
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
        counted.tables = _tables(kept, seconds, lookup, shards)
    return newest, counted
