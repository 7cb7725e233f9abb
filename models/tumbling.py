"""Tumbling windows on event time for the many: users and their affinities (pure).

A tumbling window of length L covers [end - L, end) for every end that is a multiple of L,
and is emitted once, when the watermark passes its end. What is read only in ClickHouse
(users, user x creator, user x tag) needs nothing more, and there are many such entities,
so nothing here costs Python work per row:

- rows are identified by a stable 64-bit id (`models.items.stable_ids`), so each open
  window is a list of appended (ids, keys, sums) chunks, summed per id by one sort when it
  grows large or is emitted;
- state is only the open windows: an entity idle past the longest window holds nothing.

Ids are hashes, so two entities could share one; a window's rows are checked key by key
when they are summed, and a window where that happened is summed by key instead (exact,
slower, and logged).

An emitted window is kept for `slack_s` more seconds of watermark: a row that still arrives
for it (a source partition skewed beyond the lateness) re-emits the rows it changed, exact.
A row for a window already dropped is counted in `dropped`.
"""

from __future__ import annotations

import copy
import logging
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from models.rows import concat_rows, run_starts, take_rows
from models.windows import Emitted
from swipeloop.arrays import Floats, Ids, Ints, UInts

log = logging.getLogger(__name__)


# An open window sums its chunks once they hold this many rows and as many as its last sum
# (each row is sorted O(log n) times), and joins its newest chunks into one once there are
# more than `OPEN_CHUNKS`: every epoch's snapshot pickles each array, and each key of each row.
COMPACT_ROWS = 4_096
OPEN_CHUNKS = 32


@dataclass
class Rows:
    """Rows of one window: ids, keys (and targets, for pairs), counter sums."""

    ids: UInts
    keys: Ids
    targets: Ids | None
    sums: Floats

    def take(self, at: Ints) -> Rows:
        return take_rows(self, at)

    def __reduce__(self) -> tuple[Callable[[bytes], Rows], tuple[bytes]]:
        # Pickled once: rows never change once a window holds them, and Bytewax pickles every
        # window at every epoch while holding the GIL, each key a Python string. Later
        # snapshots copy these bytes, so an epoch pickles only the rows that came in it (the
        # price: a window's rows are held twice, as arrays and as bytes).
        pickled: bytes | None = self.__dict__.get("_pickled")
        if pickled is None:
            columns = (self.ids, self.keys, self.targets, self.sums)
            pickled = self.__dict__["_pickled"] = pickle.dumps(columns, pickle.HIGHEST_PROTOCOL)
        return _unpickled, (pickled,)


def _unpickled(pickled: bytes) -> Rows:
    rows = Rows(*pickle.loads(pickled))
    rows.__dict__["_pickled"] = pickled
    return rows


def _reduce(rows: Rows, order: Ints, starts: Ints) -> Rows:
    """One row per run of `rows[order]` starting at `starts`, with the run's sum."""
    summed = rows.take(order[starts])
    summed.sums = np.add.reduceat(rows.sums[order], starts, axis=0)
    return summed


def sum_by_id(rows: Rows) -> Rows | None:
    """One row per id; None when two keys share an id (a hash collision)."""
    order = np.argsort(rows.ids, kind="stable")
    starts = run_starts(rows.ids[order])
    run = np.repeat(starts, np.diff(np.r_[starts, len(order)]))  # its run's start, per row
    keys = rows.keys[order]
    same = keys == keys[run]
    if rows.targets is not None:
        targets = rows.targets[order]
        same &= targets == targets[run]
    return _reduce(rows, order, starts) if same.all() else None


def sum_by_key(rows: Rows) -> Rows:
    """One row per key (or key and target), by a dict: exact, and slower."""
    index: dict[object, int] = {}
    named = rows.keys if rows.targets is None else zip(rows.keys, rows.targets, strict=True)
    codes = np.fromiter((index.setdefault(k, len(index)) for k in named), np.int64, len(rows.ids))
    order = np.argsort(codes, kind="stable")
    return _reduce(rows, order, run_starts(codes[order]))


@dataclass
class _Open:
    """One tumbling window's rows, in appended chunks (summed into one when they grow)."""

    chunks: list[Rows] = field(default_factory=list)
    pending: int = 0  # rows appended since the last sum
    size: int = 0  # rows after the last sum
    exact: bool = False  # ids collided here: summed by key from then on
    emitted: bool = False
    fixes: list[UInts] = field(default_factory=list)  # ids that changed after the emission
    loose: int = 0  # chunks appended since the last sum or join

    def add(self, rows: Rows) -> None:
        self.chunks.append(rows)
        self.pending += len(rows.ids)
        self.loose += 1
        if self.pending > max(COMPACT_ROWS, self.size):
            self.summed()
        elif self.loose > OPEN_CHUNKS:  # what was summed or joined before stays as it is
            self.chunks[-self.loose :] = [concat_rows(self.chunks[-self.loose :])]
            self.loose = 0

    def summed(self) -> Rows:
        """The window's rows, one per entity (which replace the chunks)."""
        if not self.pending:
            return self.chunks[0]
        rows = concat_rows(self.chunks)
        summed = None if self.exact else sum_by_id(rows)
        if summed is None:
            if not self.exact:
                log.warning("two entities share a 64-bit id: a window is summed by key")
            self.exact = True
            summed = sum_by_key(rows)
        self.chunks, self.pending, self.size, self.loose = [summed], 0, len(summed.ids), 0
        return summed


class TumblingCounts:
    """Counter vectors per entity over tumbling windows of several lengths (one table)."""

    def __init__(self, width: int, lengths: tuple[int, ...], slack_s: int = 60) -> None:
        self.width = width
        self.slack_s = slack_s
        self.open: dict[int, dict[int, _Open]] = {length: {} for length in lengths}
        self.watermark_s: int | None = None  # the last watermark closed at
        self.dropped = 0  # rows for windows emitted and dropped already (counted, not lost)

    def __deepcopy__(self, _memo: dict[int, object]) -> TumblingCounts:
        # chunks are never changed in place once stored: copy the lists, share the arrays
        twin = copy.copy(self)
        twin.open = {
            length: {
                end: replace(w, chunks=list(w.chunks), fixes=list(w.fixes))
                for end, w in windows.items()
            }
            for length, windows in self.open.items()
        }
        return twin

    def add(
        self,
        ids: UInts,
        keys: Ids,
        targets: Ids | None,
        seconds: Ints,
        sums: Floats,
    ) -> None:
        """Count `sums[i]` for entity `ids[i]` (named `keys[i]`, and `targets[i]` for a pair)
        at event second `seconds[i]` into every window length."""
        if not len(ids):
            return
        rows = Rows(ids, keys, targets, sums)
        for length, windows in self.open.items():
            ends = (seconds // length + 1) * length
            first, last = int(ends.min()), int(ends.max())
            if first == last:
                self._add(windows, first, rows)
            else:
                for end in np.unique(ends).tolist():
                    self._add(windows, end, rows.take(np.flatnonzero(ends == end)))

    def _add(self, windows: dict[int, _Open], end: int, rows: Rows) -> None:
        window = windows.get(end)
        if window is None:
            if self.watermark_s is not None and end <= self.watermark_s - self.slack_s:
                self.dropped += len(rows.ids)  # emitted and gone: too late to correct
                return
            window = windows[end] = _Open()
        if window.emitted:
            window.fixes.append(rows.ids)
        window.add(rows)

    def close(self, watermark_s: int) -> list[Emitted]:
        """Every window the watermark has passed, once; corrections of emitted ones; then
        the windows past their slack go."""
        out = []
        for length, windows in self.open.items():
            for end in sorted(windows):
                window = windows[end]
                if not window.emitted and end <= watermark_s:
                    rows = window.summed()
                    window.emitted = True
                    out.append(Emitted(length, end, rows.keys, rows.sums, rows.targets))
                elif window.fixes:
                    changed = np.unique(np.concatenate(window.fixes))
                    window.fixes = []
                    rows = window.summed()
                    fixed = rows.take(np.flatnonzero(np.isin(rows.ids, changed)))
                    out.append(Emitted(length, end, fixed.keys, fixed.sums, fixed.targets))
                if window.emitted and end <= watermark_s - self.slack_s:
                    del windows[end]
        if self.watermark_s is None or watermark_s > self.watermark_s:
            self.watermark_s = watermark_s
        return out

    def next_close_s(self) -> float:
        """The earliest watermark at which `close` has something to do."""
        due = math.inf
        for windows in self.open.values():
            for end, window in windows.items():
                if window.fixes:
                    return -math.inf
                if not window.emitted:
                    due = min(due, end)
        return due

    def evict(self, watermark_s: int) -> int:
        """Nothing to evict: only open windows are held, and they go once emitted."""
        return 0

    def nbytes(self) -> int:
        """Memory held by the open windows (8 bytes per key reference)."""
        total = 0
        for windows in self.open.values():
            for w in windows.values():
                for c in w.chunks:
                    names = 1 if c.targets is None else 2
                    total += c.ids.nbytes + c.sums.nbytes + 8 * names * len(c.ids)
        return total
