"""One order for the swipes of several topic-partitions, whatever the timing of the polls (pure).

A learner that reads two topics sees their records interleaved by when each poll landed,
and cuts them into mini-batches by how much each poll held: run the same stream twice
and it learns in another order, in other batches, and ends elsewhere. `InOrder` makes
both a function of the records alone:

merge   the sources' records are merged by a key (for events: when the server received
        them, then their id): the smallest head is taken only while every source has one
        buffered, so what comes out is the same for every timing of the polls (a k-way
        merge of each source's sequence as its partition holds it)
hold    a source with nothing buffered holds the merge back, unless it has been caught up
        and quiet (its poll source says since when) for `hold_s`; one not heard from since
        the start holds everything back
batch   the merged records are cut into batches of `batch` records; the last, partial
        one is given out once every source is drained and quiet for `hold_s` (nothing more
        can come), or once its first record has waited `wait_s` (freshness: a steady
        stream learns within a second, not when 5000 swipes have come)

Where a batch ends is then a function of the records, except where a stream pauses for
`hold_s` in its middle, or a partial batch waits `wait_s` for the rest: a replay that
sets both longer than any stall of its stream, and waits on conditions between its
phases, learns the same batches on every run. (Flushing after a pause of the merge alone
would race the quiet of the source it is waiting for.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Source(Generic[T]):
    buffered: deque[tuple[Any, T]] = field(default_factory=deque)  # (key, record)
    quiet_since: float | None = None  # caught up and quiet since then (None: not known)


class InOrder(Generic[T]):
    """Records of `expected` sources merged by `key` and cut into batches (see the module)."""

    def __init__(
        self,
        expected: Iterable[str],
        key: Callable[[T], Any],
        batch: int,
        hold_s: float,
        wait_s: float,
    ) -> None:
        self.expected = list(expected)
        self._key = key
        self._batch = batch
        self._hold_s = hold_s
        self._wait_s = wait_s
        self._sources: dict[str, _Source[T]] = {}  # heard from in this run
        self._out: list[T] = []  # the partial batch
        self._out_since = 0.0  # when its first record was merged

    def add(self, source: str, records: Sequence[T], quiet_since: float | None) -> None:
        """A poll of `source` (no records: a heartbeat saying since when it is quiet)."""
        known = self._sources.setdefault(source, _Source())
        key = self._key
        known.buffered.extend([(key(r), r) for r in records])
        known.quiet_since = quiet_since

    def take(self, now: float) -> list[list[T]]:
        """The batches that are complete at wall-clock time `now`."""
        batches = self._merge(now)
        if self._out and (self._all_quiet(now) or now - self._out_since >= self._wait_s):
            batches.append(self._out)
            self._out = []
        return batches

    def drain(self) -> list[list[T]]:
        """Every source read to its end: everything, merged, in batches."""
        for source in self._sources.values():
            source.quiet_since = float("-inf")
        batches = self._merge(0.0)
        if self._out:
            batches.append(self._out)
            self._out = []
        return batches

    @property
    def pending(self) -> int:
        """Records not given out yet (buffered or in the partial batch)."""
        return len(self._out) + sum(len(s.buffered) for s in self._sources.values())

    def restart(self, expected: Iterable[str]) -> None:
        """After a restart, reading `expected` now (a topic may have more partitions): every
        source holds the merge back until it is heard again (its buffered records, restored
        with the state, stay)."""
        self.expected = list(expected)
        for source in self._sources.values():
            source.quiet_since = None

    def _merge(self, now: float) -> list[list[T]]:
        batches: list[list[T]] = []
        sources = [self._sources.get(name) for name in self.expected]
        if any(s is None for s in sources):
            return batches
        live = [s for s in sources if s is not None]
        out = self._out
        while True:
            heads = [s for s in live if s.buffered]
            if not heads or any(not s.buffered and not self._quiet(s, now) for s in live):
                self._out = out
                return batches
            heads.sort(key=lambda s: s.buffered[0][0])
            # the smallest head's source runs until its head passes the next smallest
            first, bound = heads[0].buffered, heads[1].buffered[0][0] if len(heads) > 1 else None
            if not out:
                self._out_since = now
            while first and (bound is None or first[0][0] < bound):
                out.append(first.popleft()[1])
                if len(out) >= self._batch:
                    batches.append(out)
                    out = []
                    self._out_since = now

    def _all_quiet(self, now: float) -> bool:
        """Every source heard from, drained and quiet for `hold_s`: nothing more can come."""
        sources = [self._sources.get(name) for name in self.expected]
        return all(s is not None and not s.buffered and self._quiet(s, now) for s in sources)

    def _quiet(self, source: _Source[T], now: float) -> bool:
        return source.quiet_since is not None and now - source.quiet_since >= self._hold_s
