"""A collisionless embedding table: one row per id, rows freed when their id expires.

Monolith's table (RecSys 2022 workshop) in numpy: ids are never hashed into shared rows
(two ids sharing a vector learn each other's taste), a row is handed out only to an id that
passed the frequency filter (`models.frequency`), and a row whose id has not been seen for
the expiry time goes back to a free list. Rows can be stored as float16 (half the memory;
every update is computed in float32 and rounded once when written back).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any, TypeVar

import numpy as np

from models.rows import run_starts
from swipeloop.arrays import Ints, Vector, Vectors

# Who takes the changes of a table (`take_changed`), each its own: the publication, and a
# copy kept elsewhere (the embeddings flow's mirrors).
PUBLISHED, COPIED = 1, 2
_EVERY_TAKER = PUBLISHED | COPIED


class EmbeddingTable:
    """Rows of `dim` floats by string id; -1 stands for "no row" in every row array."""

    def __init__(self, dim: int, *, fp16: bool = False, capacity: int = 1024) -> None:
        self.dim = dim
        self.dtype = np.dtype(np.float16 if fp16 else np.float32)
        self._rows: dict[str | None, int] = {}  # (None is never a key: rows_of takes None)
        self._keys: list[str | None] = []  # row -> id (None: free)
        self._free: list[int] = []
        self._matrix = np.zeros((capacity, dim), dtype=self.dtype)
        self._last_seen = np.zeros(capacity, dtype=np.int64)  # event second
        self._changed = np.zeros(capacity, dtype=np.uint8)  # which takers have not seen it
        self._live = np.zeros(capacity, dtype=bool)  # the row is some id's

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def rows_of(self, keys: Sequence[str | None]) -> Ints:
        """The row of each id, -1 where it has none."""
        return np.fromiter(map(self._rows.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))

    def insert(self, keys: Sequence[str], vectors: Vectors, seen_s: int) -> Ints:
        """Give new ids a row each, starting at `vectors`; ids that have one keep it."""
        rows = np.empty(len(keys), dtype=np.int64)
        for i, key in enumerate(keys):
            row = self._rows.get(key)
            if row is None:
                row = self._free.pop() if self._free else self._grow()
                self._rows[key] = row
                self._keys[row] = key
                self._matrix[row] = vectors[i]
                self._last_seen[row] = seen_s
                self._changed[row] = _EVERY_TAKER
                self._live[row] = True
            rows[i] = row
        return rows

    def put(self, keys: Sequence[str], vectors: Vectors, seen_s: int = 0) -> None:
        """Set these ids' vectors, giving a row to those without one (a copy's writes)."""
        rows = self.rows_of(keys)
        new = np.flatnonzero(rows < 0)
        if len(new):
            rows[new] = self.insert([keys[i] for i in new.tolist()], vectors[new], seen_s)
        self._matrix[rows] = vectors.astype(self.dtype)

    def _grow(self) -> int:
        row = len(self._keys)
        self._keys.append(None)
        if row == len(self._matrix):
            self._reserve(2 * len(self._matrix))
        return row

    def _reserve(self, capacity: int) -> None:
        """Room for `capacity` rows (new rows zero)."""
        self._matrix = _zero_extended(self._matrix, capacity)
        self._last_seen = _zero_extended(self._last_seen, capacity)
        self._changed = _zero_extended(self._changed, capacity)
        self._live = _zero_extended(self._live, capacity)

    def gather(self, rows: Ints) -> Vectors:
        """The vectors of `rows`, as float32 copies."""
        return self._matrix[rows].astype(np.float32)

    def vector(self, key: str) -> Vector | None:
        row = self._rows.get(key)
        return None if row is None else self._matrix[row].astype(np.float32)

    def sample_rows(self, rng: np.random.Generator, n: int) -> Ints:
        """`n` rows drawn uniformly from those ever handed out; -1 where the row is free."""
        if not self._keys:
            return np.full(n, -1, dtype=np.int64)
        rows = rng.integers(0, len(self._keys), size=n)
        rows[~self._live[rows]] = -1
        return rows

    def keys_at(self, rows: Ints) -> list[str | None]:
        """The id of each row (None: a free row, or -1)."""
        keys = self._keys
        return [keys[r] if r >= 0 else None for r in rows.tolist()]

    def add(self, rows: Ints, deltas: Vectors, max_step: float = 0.5) -> None:
        """Add each row's deltas (a row may repeat: its deltas are summed). A row's step is
        at most `max_step` long: the thousands of updates a viral video gets in one batch
        are all computed from its old vector, and one after the other they would have
        saturated long before their sum (the direction is kept, the length capped)."""
        if not len(rows):
            return
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        starts = run_starts(ordered)
        unique = ordered[starts]
        summed = np.add.reduceat(deltas[order], starts, axis=0)
        norms = np.linalg.norm(summed, axis=1)
        too_long = norms > max_step
        summed[too_long] *= (max_step / norms[too_long]).astype(np.float32)[:, None]
        self._matrix[unique] = (self._matrix[unique].astype(np.float32) + summed).astype(self.dtype)
        self._changed[unique] = _EVERY_TAKER

    def touch(self, rows: Ints, seconds: Ints) -> None:
        """Mark rows seen at these event seconds (-1 rows are skipped)."""
        has = rows >= 0
        np.maximum.at(self._last_seen, rows[has], seconds[has])

    def expire(self, before_s: int) -> list[str]:
        """Free the rows of ids last seen before `before_s`; their ids."""
        stale = np.flatnonzero(self._last_seen[: len(self._keys)] < before_s).tolist()
        return self.remove([key for row in stale if (key := self._keys[row]) is not None])

    def remove(self, keys: Sequence[str]) -> list[str]:
        """Free the rows of these ids now; the ids that had one."""
        gone = []
        for key in keys:
            row = self._rows.pop(key, None)
            if row is not None:
                gone.append(key)
                self._keys[row] = None
                self._free.append(row)
                self._changed[row] = 0
                self._live[row] = False
        return gone

    def take_changed(self, taker: int = PUBLISHED) -> tuple[list[str], Vectors]:
        """The ids whose vectors changed since this taker's last call, and their vectors."""
        rows = np.flatnonzero(self._changed[: len(self._keys)] & taker)
        self._changed[rows] &= ~np.uint8(taker)
        keys = self._keys  # (a freed row's flags are cleared: these rows are all in use)
        return [keys[row] for row in rows.tolist()], self.gather(rows)  # type: ignore[misc]

    def items(self) -> tuple[list[str], Vectors]:
        """Every id and its vector."""
        return self._named(np.arange(len(self._keys)))

    def _named(self, rows: Ints) -> tuple[list[str], Vectors]:
        """The ids of the rows in use among `rows`, and their vectors."""
        keys, kept = [], []
        for row in rows.tolist():
            key = self._keys[row]
            if key is not None:
                keys.append(key)
                kept.append(row)
        return keys, self.gather(np.asarray(kept, dtype=np.int64))

    def nbytes(self) -> int:
        """Memory of the rows in use (vectors, last-seen second, changed and live flags)."""
        per_row = self.dim * self.dtype.itemsize + 8 + 1 + 1
        return len(self._keys) * per_row

    def __getstate__(self) -> dict[str, Any]:
        """Snapshots hold the used rows only (not the spare capacity)."""
        used = len(self._keys)
        state = dict(self.__dict__)
        state["_matrix"] = self._matrix[:used].copy()
        state["_last_seen"] = self._last_seen[:used].copy()
        state["_changed"] = self._changed[:used].copy()
        state["_live"] = self._live[:used].copy()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._changed.dtype == bool:  # a snapshot from before there were two takers
            self._changed = self._changed.astype(np.uint8) * np.uint8(_EVERY_TAKER)
        if "_live" not in state:  # (and before the live-row mask)
            self._live = np.fromiter((k is not None for k in self._keys), bool, len(self._keys))
        self._reserve(max(1024, 2 * len(self._keys)))


A = TypeVar("A", bound=np.ndarray)


def _zero_extended(array: A, rows: int) -> A:
    """`array` with zero rows appended up to `rows`."""
    out = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    out[: len(array)] = array
    return out  # type: ignore[return-value]


def normalized(vector: Vector) -> Vector:
    """Unit length, so inner product is cosine similarity."""
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)


def normalized_rows(matrix: Vectors) -> Vectors:
    """Every row at unit length (a zero row stays zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def mean_vector(vectors: list[Vector]) -> Vector | None:
    """The normalized mean of some vectors (a user's taste from the items they engaged with)."""
    if not vectors:
        return None
    mean = np.mean(np.stack(vectors), axis=0).astype(np.float32)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else None
