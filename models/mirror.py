"""The item side's latest published vectors, as the user side reads them (pure).

A user shard steps its users against items, creators and tags that item shards own: it reads
their vectors from this copy, which follows what those shards publish, seconds stale at most
(Monolith's workers reading their parameter servers). One copy serves every shard of a
process: its worker threads read it while one of them writes, hence the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.embeddings import EmbeddingTable
from models.learning import Lookup
from swipeloop.arrays import Bools, Ints, Vectors

MIRRORED = ("item", "creator", "tag")


@dataclass
class MirrorUpdate:
    """One item shard's publication for the mirrors: changed vectors and removed ids, by kind
    (after a start, every vector it holds)."""

    shard: int
    vectors: dict[str, tuple[list[str], Vectors]] = field(default_factory=dict)
    removed: dict[str, list[str]] = field(default_factory=dict)


class Mirror:
    """Vectors of items, creators and tags by id, as last published."""

    def __init__(self, dim: int) -> None:
        self.tables = {kind: EmbeddingTable(dim) for kind in MIRRORED}
        self._lock = threading.Lock()

    def apply(self, update: MirrorUpdate) -> None:
        """Take in one publication."""
        with self._lock:
            for kind, keys in update.removed.items():
                self.tables[kind].remove(keys)
            for kind, (ids, vectors) in update.vectors.items():
                if ids:
                    self.tables[kind].put(ids, vectors)

    def lookup(self, kind: str) -> Lookup:
        """The vectors of one kind of id, as a `Lookup`."""
        table = self.tables[kind]

        def vectors(keys: Sequence[str | None]) -> tuple[Vectors, Bools]:
            with self._lock:
                rows = table.rows_of(keys)
                has = rows >= 0
                return table.gather(rows[has]), has

        return vectors

    def item_rows(self, keys: Sequence[str | None]) -> Ints:
        """Each item's row here (-1: none), for `item_vectors`."""
        with self._lock:
            return self.tables["item"].rows_of(keys)

    def draw_items(self, rng: np.random.Generator, n: int) -> Ints:
        """`n` rows drawn uniformly from those of items (-1: a draw that missed)."""
        with self._lock:
            return self.tables["item"].sample_rows(rng, n)

    def item_vectors(self, rows: Ints) -> Vectors:
        """The vectors at these rows (a row freed and given to another item meanwhile gives
        that item's: for a drawn negative, as good a draw)."""
        with self._lock:
            return self.tables["item"].gather(rows)

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables.values())

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
