"""Sliding windows on event time: counter vectors per entity, in hop-sized buckets (pure).

A window of length L sliding by hop h covers [end - L, end) for every end that is a multiple
of h. An event is added once, to the bucket of its second; a window's value is the sum of
its L/h buckets. Two running totals per window length are kept, each updated as buckets
enter and leave rather than re-summed:

- `live`: the window ending after the newest event, counted so far (what serving reads);
- `final`: the next window end to close. When the watermark passes it, every entity with
  events in it is emitted, final, and the total slides on by one hop.

Buckets are kept time-major (a slot per bucket holding the rows that had events in it), so
memory follows activity: a user with three events holds three entries, not a ring.

An event that arrives for a window already emitted (possible only when source partitions
are skewed by more than the lateness) updates the buckets and re-emits the windows it
changed, so what is emitted last for each window is exact.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
import numpy.typing as npt

from swipeloop.arrays import Floats, Ids, Ints


def scatter_add(totals: Floats, rows: Ints, sums: Floats) -> None:
    """`totals[rows[i]] += sums[i]`, repeated rows included (`np.add.at` on the flat view,
    which numpy does several times faster than on rows of a 2-d array)."""
    width = totals.shape[1]
    at = (rows[:, None] * width + np.arange(width)).ravel()
    np.add.at(totals.reshape(-1), at, sums.ravel())


@dataclass(frozen=True)
class WindowSpec:
    """A window length and the hop it slides by, in seconds."""

    length_s: int
    hop_s: int

    def __post_init__(self) -> None:
        if self.length_s % self.hop_s:
            raise ValueError(f"window {self.length_s} s: not a multiple of its hop {self.hop_s} s")


# 12 buckets each: the 1-minute window slides every 5 s, the 24-hour one every 2 h.
WINDOWS: tuple[WindowSpec, ...] = (
    WindowSpec(60, 5),
    WindowSpec(300, 25),
    WindowSpec(3600, 300),
    WindowSpec(86400, 7200),
)
SLOT_ENTRIES = 8  # a bucket sums its entries per entity once it holds this many


@dataclass
class Emitted:
    """Final windows: rows `keys` of window `window_s` ending at `end_s`, with their counts
    (and for a pair table, each row's second key in `targets`)."""

    window_s: int
    end_s: int
    keys: Ids
    counts: Floats
    targets: Ids | None = None


@dataclass
class _Slot:
    """The entries of one bucket: (rows, counts), appended per batch and summed per row once
    there are `SLOT_ENTRIES` of them or they are read. A bucket then holds one entry per
    entity that had events in it, and few arrays (every snapshot pickles each one)."""

    rows: list[Ints] = field(default_factory=list)
    sums: list[Floats] = field(default_factory=list)

    def add(self, rows: Ints, sums: Floats) -> None:
        self.rows.append(rows)
        self.sums.append(sums)
        if len(self.rows) >= SLOT_ENTRIES:
            self._sum()

    def _sum(self) -> None:
        rows, at = np.unique(np.concatenate(self.rows), return_inverse=True)
        sums = np.zeros((len(rows), self.sums[0].shape[1]))
        scatter_add(sums, at.ravel(), np.concatenate(self.sums))
        self.rows, self.sums = [rows], [sums]

    def entries(self, width: int) -> tuple[Ints, Floats]:
        if not self.rows:
            return np.empty(0, np.int64), np.empty((0, width))
        if len(self.rows) > 1:
            self._sum()
        return self.rows[0], self.sums[0]


class _Window:
    """One window length over one table: its buckets and its two running totals."""

    def __init__(
        self,
        spec: WindowSpec,
        width: int,
        capacity: int,
        slack_s: int,
        live: bool,
    ) -> None:
        self.spec = spec
        self.width = width
        self.slack_s = slack_s
        self.slots: dict[int, _Slot] = {}
        self.has_live = live  # whether the live total is kept (only what is served needs it)
        self.live = np.zeros((capacity if live else 0, width))
        self.final = np.zeros((capacity, width))
        self.live_end: int | None = None
        self.final_end: int | None = None
        self.dropped = 0  # events older than every bucket still kept (counted, not lost silently)
        self.pruned_before = -(2**62)  # buckets before this one are gone
        self.stale = 0  # emitted windows a late row fell in but whose buckets were gone
        self.fixes: list[tuple[Ints, Ints]] = []  # (rows, seconds) added to emitted windows

    def copy(self) -> _Window:
        """An independent copy (entries' arrays are shared: they are never changed)."""
        twin = copy.copy(self)
        twin.slots = {b: _Slot(list(s.rows), list(s.sums)) for b, s in self.slots.items()}
        twin.live, twin.final = self.live.copy(), self.final.copy()
        twin.fixes = list(self.fixes)
        return twin

    def without_totals(self) -> _Window:
        """A copy without its running totals (see `rebuild_totals`)."""
        twin = copy.copy(self)
        twin.live = twin.final = np.zeros((0, self.width))
        return twin

    def rebuild_totals(self, capacity: int) -> None:
        """Running totals summed again from the buckets: `final` at once, `live` at the next
        look (which marks every row it finds as changed)."""
        self.live = np.zeros((capacity if self.has_live else 0, self.width))
        self.final = np.zeros((capacity, self.width))
        self.live_end = None
        if self.final_end is not None:
            self._slide(self.final, self.final_end - self.spec.length_s, self.final_end, None)

    def grow(self, capacity: int) -> None:
        for name in ("live", "final") if self.has_live else ("final",):
            old = getattr(self, name)
            new = np.zeros((capacity, self.width))
            new[: len(old)] = old
            setattr(self, name, new)

    def add(self, rows: Ints, seconds: Ints, sums: Floats, dirty: npt.NDArray[np.bool_]) -> None:
        h, length = self.spec.hop_s, self.spec.length_s
        if self.final_end is not None:
            keep = seconds >= self.final_end - length - self.slack_s
            self.dropped += int((~keep).sum())
            rows, seconds, sums = rows[keep], seconds[keep], sums[keep]
            in_final = (seconds >= self.final_end - length) & (seconds < self.final_end)
            scatter_add(self.final, rows[in_final], sums[in_final])
            late = seconds < self.final_end - h  # inside a window already emitted
            if late.any():
                self.fixes.append((rows[late], seconds[late]))
            if not len(seconds):
                return
        buckets = seconds // h
        first, last = int(buckets.min()), int(buckets.max())
        if first == last:  # the common case: a batch within one bucket
            self.slots.setdefault(first, _Slot()).add(rows, sums)
        else:
            for b in np.unique(buckets).tolist():
                at = np.flatnonzero(buckets == b)
                self.slots.setdefault(b, _Slot()).add(rows[at], sums[at])
        if self.has_live and self.live_end is not None:
            in_live = (seconds >= self.live_end - length) & (seconds < self.live_end)
            scatter_add(self.live, rows[in_live], sums[in_live])
            dirty[rows[in_live]] = True

    def _slide(
        self, totals: Floats, end: int, new_end: int, dirty: npt.NDArray[np.bool_] | None
    ) -> None:
        """Move a running total from the window ending at `end` to the one ending at `new_end`."""
        h, length = self.spec.hop_s, self.spec.length_s
        if new_end - end >= length:  # nothing in common: rebuild from the buckets
            if dirty is not None:
                dirty[totals[:, -1] != 0] = True
            totals[:] = 0
            leaving: range = range(0)
            entering = range((new_end - length) // h, new_end // h)
        else:
            leaving = range((end - length) // h, (new_end - length) // h)
            entering = range(end // h, new_end // h)
        for sign, buckets in ((-1.0, leaving), (1.0, entering)):
            for b in buckets:
                slot = self.slots.get(b)
                if slot is None:
                    continue
                rows, sums = slot.entries(self.width)
                scatter_add(totals, rows, sums if sign > 0 else -sums)
                if dirty is not None:
                    dirty[rows] = True
        emptied = totals[:, -1] <= 0.5  # the events column: no event left, no float residue
        totals[emptied] = 0

    def advance_live(self, newest_s: int, dirty: npt.NDArray[np.bool_]) -> None:
        """Slide `live` to the window that ends after the newest event."""
        if not self.has_live:
            return
        new_end = (newest_s // self.spec.hop_s + 1) * self.spec.hop_s
        if self.live_end is None:  # the first look: sum what the buckets hold
            self._slide(self.live, new_end - self.spec.length_s, new_end, dirty)
            self.live_end = new_end
        elif new_end > self.live_end:
            self._slide(self.live, self.live_end, new_end, dirty)
            self.live_end = new_end

    def close(self, watermark_s: int, keys: Ids) -> list[Emitted]:
        """Emit every window ending at or before the watermark, then drop unneeded buckets."""
        out: list[Emitted] = []
        h, length = self.spec.hop_s, self.spec.length_s
        if self.final_end is None:  # the first window to close holds the oldest bucket
            if not self.slots:
                return out
            self.final_end = (min(self.slots) + 1) * h
            self._slide(self.final, self.final_end - length, self.final_end, None)
        out.extend(self._fixes(keys))
        while self.final_end is not None and self.final_end <= watermark_s:
            rows = np.nonzero(self.final[:, -1] > 0.5)[0]
            if len(rows):
                out.append(Emitted(length, self.final_end, keys[rows], self.final[rows]))
            nxt = self.final_end + h
            if not len(rows):  # an empty window: jump to the first one holding a bucket
                ahead = [b for b in self.slots if b * h >= self.final_end]
                if not ahead:
                    nxt = max(nxt, (watermark_s // h) * h + h)
                else:
                    nxt = max(nxt, (min(ahead) + 1) * h)
            self._slide(self.final, self.final_end, nxt, None)
            self.final_end = nxt
        if self.final_end is not None and (self.live_end is not None or not self.has_live):
            # both totals still subtract the buckets that leave them
            first = self.final_end if self.live_end is None else min(self.final_end, self.live_end)
            oldest = (first - length - self.slack_s) // h
            self.pruned_before = max(self.pruned_before, oldest)
            for b in [b for b in self.slots if b < oldest]:
                del self.slots[b]
        return out

    def _fixes(self, keys: Ids) -> list[Emitted]:
        """Re-emit, exactly, the emitted windows that late additions changed. One whose
        oldest buckets are gone cannot be recomputed: it keeps its emitted value and is
        counted in `stale` (never re-emitted from part of its buckets)."""
        if not self.fixes or self.final_end is None:
            return []
        h, length = self.spec.hop_s, self.spec.length_s
        last_emitted = self.final_end - h
        rows = np.concatenate([r for r, _ in self.fixes])
        seconds = np.concatenate([s for _, s in self.fixes])
        self.fixes = []
        ends: dict[int, set[int]] = {}
        for row, second in zip(rows.tolist(), seconds.tolist(), strict=True):
            first = (second // h + 1) * h
            for end in range(first, min(last_emitted, second + length) + 1, h):
                if (end - length) // h < self.pruned_before:
                    self.stale += 1
                    continue
                ends.setdefault(end, set()).add(row)
        out = []
        for end in sorted(ends):
            wanted = np.array(sorted(ends[end]), dtype=np.int64)
            counts = self.window_counts(wanted, end)
            out.append(Emitted(length, end, keys[wanted], counts))
        return out

    def window_counts(self, rows: Ints, end: int) -> Floats:
        """The counts of `rows` (ascending) in the window ending at `end`, from the buckets."""
        h, length = self.spec.hop_s, self.spec.length_s
        out = np.zeros((len(rows), self.width))
        for b in range((end - length) // h, end // h):
            slot = self.slots.get(b)
            if slot is None:
                continue
            entry_rows, sums = slot.entries(self.width)
            at = np.minimum(np.searchsorted(rows, entry_rows), len(rows) - 1)
            mine = rows[at] == entry_rows
            scatter_add(out, at[mine], sums[mine])
        return out

    def oldest_kept_s(self) -> int | None:
        """The start of the oldest bucket still kept."""
        return min(self.slots) * self.spec.hop_s if self.slots else None


class SlidingCounts:
    """Counter vectors per entity key over several sliding windows (one table's state)."""

    def __init__(
        self,
        width: int,
        windows: tuple[WindowSpec, ...] = WINDOWS,
        slack_s: int = 60,
        capacity: int = 1024,
        live: bool = True,
    ) -> None:
        """`live`: keep the live windows (what serving reads); without, only closed windows
        are counted."""
        self.width = width
        self.windows = [_Window(spec, width, capacity, slack_s, live) for spec in windows]
        self.rows: dict[Hashable, int] = {}
        self.keys: Ids = np.full(capacity, None, dtype=object)
        self.free: list[int] = []
        self.last_s = np.full(capacity, np.iinfo(np.int64).min, dtype=np.int64)
        self.dirty = np.zeros(capacity, dtype=bool)
        self.newest_s: int | None = None
        self._size = 0

    def __deepcopy__(self, _memo: dict[int, object]) -> SlidingCounts:
        # Bytewax copies state at every epoch: arrays are copied, and what is never changed
        # in place once stored (keys, bucket entries) is shared. ~20x faster than deepcopy.
        twin = copy.copy(self)
        twin.rows = dict(self.rows)
        twin.keys = self.keys.copy()
        twin.free = list(self.free)
        twin.last_s = self.last_s.copy()
        twin.dirty = self.dirty.copy()
        twin.windows = [w.copy() for w in self.windows]
        return twin

    def __getstate__(self) -> dict[str, object]:
        # Pickled for recovery snapshots: the running totals are left out (more than half of
        # the bytes) and rebuilt from the buckets on load, which hold everything they sum.
        state = self.__dict__.copy()
        state["windows"] = [w.without_totals() for w in self.windows]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        for w in self.windows:
            w.rebuild_totals(len(self.keys))

    def _row(self, key: Hashable) -> int:
        row = self.rows.get(key)
        if row is None:
            if self.free:
                row = self.free.pop()
            else:
                if self._size == len(self.keys):
                    self._grow(2 * len(self.keys))
                row, self._size = self._size, self._size + 1
            self.rows[key] = row
            self.keys[row] = key
        return row

    def _grow(self, capacity: int) -> None:
        keys = np.full(capacity, None, dtype=object)
        keys[: len(self.keys)] = self.keys
        self.keys = keys
        last = np.full(capacity, np.iinfo(np.int64).min, dtype=np.int64)
        last[: len(self.last_s)] = self.last_s
        self.last_s = last
        dirty = np.zeros(capacity, dtype=bool)
        dirty[: len(self.dirty)] = self.dirty
        self.dirty = dirty
        for w in self.windows:
            w.grow(capacity)

    def add(self, keys: Ids | Sequence[Hashable], seconds: Ints, sums: Floats) -> None:
        """Count `sums[i]` for `keys[i]` at event second `seconds[i]` into every window."""
        if not len(keys):
            return
        rows = np.fromiter(map(self.rows.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
        for i in np.flatnonzero(rows < 0).tolist():  # new entities (or new twice in a batch)
            rows[i] = self._row(keys[i])
        np.maximum.at(self.last_s, rows, seconds)
        newest = int(seconds.max())
        self.newest_s = newest if self.newest_s is None else max(self.newest_s, newest)
        for w in self.windows:
            w.add(rows, seconds, sums, self.dirty)

    def close(self, watermark_s: int) -> list[Emitted]:
        """Every window that the watermark has closed since the last call (and corrections)."""
        out: list[Emitted] = []
        for w in self.windows:
            if self.newest_s is not None:  # so the buckets it no longer needs can go
                w.advance_live(self.newest_s, self.dirty)
            out.extend(w.close(watermark_s, self.keys))
        return out

    def live(self) -> tuple[Ids, list[Floats], list[int]]:
        """Entities whose live windows changed since the last call: keys, counts per window
        (rows in key order), and each window's end."""
        assert all(w.has_live for w in self.windows), "built without live windows"
        if self.newest_s is not None:
            for w in self.windows:
                w.advance_live(self.newest_s, self.dirty)
        changed = np.flatnonzero(self.dirty[: self._size])
        self.dirty[:] = False
        rows = changed[self.keys[changed] != None]  # noqa: E711 (not evicted since)
        ends = [w.live_end or 0 for w in self.windows]
        return self.keys[rows], [w.live[rows] for w in self.windows], ends

    def evict(self, watermark_s: int) -> int:
        """Forget entities idle beyond the longest window (and its slack); how many.

        Called after `close(watermark_s)`: an entity goes only once none of its events is
        in a kept bucket, so a reused row starts from nothing.
        """
        kept = [s for s in (w.oldest_kept_s() for w in self.windows) if s is not None]
        longest = max(w.spec.length_s + w.slack_s + w.spec.hop_s for w in self.windows)
        horizon = min([watermark_s - longest, *kept])
        stale = np.nonzero(self.last_s[: self._size] < horizon)[0]
        gone = 0
        for row in stale.tolist():
            key = self.keys[row]
            if key is None:
                continue
            del self.rows[key]
            self.keys[row] = None
            self.free.append(row)
            for w in self.windows:
                if w.has_live:
                    w.live[row] = 0
                w.final[row] = 0
            gone += 1
        return gone

    def next_close_s(self) -> float:
        """The earliest watermark at which `close` has something to do (-inf: unknown yet,
        or corrections are waiting)."""
        ends = [w.final_end for w in self.windows]
        if any(end is None for end in ends) or any(w.fixes for w in self.windows):
            return -math.inf
        return float(min(end for end in ends if end is not None))

    @property
    def dropped(self) -> int:
        """Rows too old for any kept bucket, and emitted windows that late rows could no
        longer correct (a partition skewed beyond the slack)."""
        return sum(w.dropped + w.stale for w in self.windows)

    def nbytes(self) -> int:
        """Memory held by the counters and buckets."""
        total = sum(w.live.nbytes + w.final.nbytes for w in self.windows)
        for w in self.windows:
            for slot in w.slots.values():
                total += sum(r.nbytes for r in slot.rows) + sum(s.nbytes for s in slot.sums)
        return total + self.last_s.nbytes + len(self.rows) * 100
