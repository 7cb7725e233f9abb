"""Phase one of the feature windows: a batch of events becomes counter rows per table (pure).

Each event is counted for its item, its creator, its user, and the user's affinity to the
creator and to each of the item's tags. Rows of the same (entity, second) in one batch are
summed first: a batch read from one source partition is the salt, so a viral item costs
one row per batch and partition, not one per event; phase two (`models.windows`) merges
the partial sums of all partitions per entity.

An event older than the partition's watermark (the newest second seen on it, minus the
allowed lateness) is late: it is returned apart, to be recorded, and counted nowhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np
import numpy.typing as npt

from models.features import COUNTERS, affinity_weights, engagement_matrix, kind_codes
from swipeloop.contracts import ReceivedEvent

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

ENGAGEMENT_TABLES = ("item", "creator", "user")
AFFINITY_TABLES = ("user_creator", "user_tag")
TABLES = ENGAGEMENT_TABLES + AFFINITY_TABLES
AFFINITY_COUNTERS = ("weight", "events")
PAIR = "\x1f"  # joins user and creator / tag in an affinity key
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


@dataclass
class Counts:
    """Rows of one table: entity key, event second, summed counters."""

    keys: list[str]
    seconds: Ints
    sums: Floats

    def take(self, at: Ints) -> Counts:
        """The rows at the positions `at`."""
        return Counts([self.keys[i] for i in at.tolist()], self.seconds[at], self.sums[at])


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


class _Rows:
    """Collects (key, second) -> summed row indices for one table."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, int], int] = {}
        self.group_of: list[int] = []
        self.source: list[int] = []

    def add(self, key: str, second: int, source: int) -> None:
        group = self.groups.setdefault((key, second), len(self.groups))
        self.group_of.append(group)
        self.source.append(source)

    def counts(self, values: Floats) -> Counts:
        sums = np.zeros((len(self.groups), values.shape[1]))
        np.add.at(sums, np.array(self.group_of, dtype=np.int64), values[self.source])
        keys = [k for k, _ in self.groups]
        seconds = np.fromiter((s for _, s in self.groups), dtype=np.int64, count=len(keys))
        return Counts(keys, seconds, sums)


def count_events(
    events: list[tuple[int, ReceivedEvent]],
    newest_s: int | None,
    lateness_s: int,
    lookup: Callable[[str], ItemInfo | None],
) -> tuple[int | None, Counted]:
    """Count one partition's batch (offset, event) in order; returns the newest second seen
    (the partition's state) and the rows."""
    late: list[Late] = []
    kinds: list[str] = []
    watch: list[float] = []
    durations: list[float] = []
    rows = {table: _Rows() for table in TABLES}
    item, creator, user = rows["item"], rows["creator"], rows["user"]
    user_creator, user_tag = rows["user_creator"], rows["user_tag"]
    for offset, ev in events:
        second = second_of(ev.client_ts)
        if newest_s is not None and second < newest_s - lateness_s:
            late.append(Late(ev, offset, newest_s - lateness_s))
            continue
        if newest_s is None or second > newest_s:
            newest_s = second
        i = len(kinds)
        known = lookup(ev.item_id)
        kinds.append(ev.kind)
        watch.append(float(ev.watch_ms))
        durations.append(float(known.duration_ms) if known else 0.0)
        item.add(ev.item_id, second, i)
        user.add(ev.user_id, second, i)
        if known is not None:
            creator.add(known.creator_id, second, i)
            user_creator.add(ev.user_id + PAIR + known.creator_id, second, i)
            for tag in known.tags:
                user_tag.add(ev.user_id + PAIR + tag, second, i)
    counted = Counted(None if newest_s is None else newest_s - lateness_s, late=late)
    if kinds:
        codes = kind_codes(kinds)
        watch_ms, duration_ms = np.array(watch), np.array(durations)
        engagement = engagement_matrix(codes, watch_ms, duration_ms)
        affinity = np.column_stack(
            (affinity_weights(codes, watch_ms, duration_ms), np.ones(len(kinds)))
        )
        for table, collected in rows.items():
            if collected.groups:
                values = engagement if table in ENGAGEMENT_TABLES else affinity
                counted.tables[table] = collected.counts(values)
    return newest_s, counted
