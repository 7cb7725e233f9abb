"""Rows bound for ClickHouse: `Rows` for the `clickhouse_sinks`, and `TableRows`, the
JSONEachRow lines with their source offsets that the `progress` sink buffers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rows:
    """Rows bound for one ClickHouse table, and the source offsets they came from."""

    table: str
    columns: list[str]
    rows: list[list[Any]]
    token: str | None = None
    arrow: Any = None  # a pyarrow Table instead of `rows`: many rows, no Python per row


@dataclass
class TableRows:
    """JSONEachRow lines for one table from one topic-partition, with their source offsets.

    `months` (the yyyymm each row is partitioned on) is set for tables partitioned by month;
    `ids` and `stamps` (id, receive time in ms) for tables deduplicated by id; `users` for
    tables of user data (what an erasure removes).
    """

    table: str
    lines: list[bytes]
    offsets: list[int]
    months: list[int] | None = None
    ids: list[int] | None = None
    stamps: list[int] | None = None
    users: list[str] | None = None

    def take(self, keep: list[int]) -> TableRows:
        """The rows at the positions in `keep` (ascending), as new lists."""

        def pick(values: list[Any] | None) -> Any:
            return None if values is None else [values[i] for i in keep]

        return TableRows(
            self.table,
            pick(self.lines),
            pick(self.offsets),
            pick(self.months),
            pick(self.ids),
            pick(self.stamps),
            pick(self.users),
        )

    def tail_after(self, offset: int) -> TableRows | None:
        """The rows past `offset` (a replay can straddle what is stored), or None."""
        if self.offsets[-1] <= offset:
            return None
        if self.offsets[0] > offset:
            return self
        start = next(i for i, off in enumerate(self.offsets) if off > offset)
        return self.take(list(range(start, len(self.offsets))))

    def buffer(self) -> TableRows:
        """A copy to extend with later polls (the dedup ids have done their work)."""
        months = None if self.months is None else list(self.months)
        users = None if self.users is None else list(self.users)
        return TableRows(self.table, list(self.lines), list(self.offsets), months, users=users)

    def extend(self, more: TableRows) -> None:
        """Append the rows of a later poll of the same table and partition (to a buffer)."""
        self.lines.extend(more.lines)
        self.offsets.extend(more.offsets)
        if self.months is not None and more.months is not None:
            self.months.extend(more.months)
        if self.users is not None and more.users is not None:
            self.users.extend(more.users)

    def runs(self) -> Iterator[tuple[list[bytes], list[int]]]:
        """Consecutive rows of the same month: each run is one part, so one atomic insert."""
        if self.months is None:
            yield self.lines, self.offsets
            return
        months, start = self.months, 0
        for i in range(1, len(months) + 1):
            if i == len(months) or months[i] != months[start]:
                yield self.lines[start:i], self.offsets[start:i]
                start = i
