"""One shard of items, creators and tags (pure): their rows and filter counts, the target
half of every step, and the publications the user side reads (`models.shards`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.embeddings import COPIED, PUBLISHED, EmbeddingTable
from models.learning import (
    CatalogChanges,
    LearnerConfig,
    Lookup,
    Meta,
    Published,
    admit,
    cold_item_vectors,
    first_of,
    logistic_step,
    meta_at,
    starting,
    table_lookup,
)
from models.mirror import MIRRORED, Mirror, MirrorUpdate
from models.shards import Negatives, ToItems, sketch
from swipeloop.arrays import Bools, Floats, Ints, Vectors

ColdItems = Callable[[list[Meta]], tuple[Vectors, Bools]]


class ItemShard(CatalogChanges):
    """The items, creators and tags that hash to one shard of `shards`."""

    def __init__(self, config: LearnerConfig, shard: int, shards: int, seed: int = 0) -> None:
        self.config, self.shard, self.shards = config, shard, shards
        self.tables = {kind: EmbeddingTable(config.dim, fp16=config.fp16) for kind in MIRRORED}
        self.filter = sketch(config, shards)
        self.rng = np.random.default_rng((seed, 1, shard))
        self.newest_s: int | None = None
        self.updates = 0  # target halves of steps taken (one a pair)
        self._cold_items: dict[str, Meta] = {}  # items without a vector that had events
        self._forgotten: list[str] = []  # deleted items, to publish as gone

    def learn(self, batch: ToItems, mirror: Mirror) -> None:
        """Count the sightings of this shard's ids, admit those that pass, and step the
        target half of every pair."""
        if batch.newest_s is not None:
            self.newest_s = max(self.newest_s or 0, batch.newest_s)
        rows: dict[str, Ints] = {}
        for kind, seen in (("creator", batch.creators), ("tag", batch.tags)):
            start = starting(self.rng, self.config, kind, None)
            rows[kind] = admit(self.tables[kind], self.filter, kind, seen.keys, seen.seconds, start)
        events = batch.events
        if events is not None:
            cold = self._cold(mirror)

            def starts(_new: list[str], at: list[int]) -> tuple[Vectors, Bools]:
                return cold(meta_at(events, at))

            start = starting(self.rng, self.config, "item", starts)
            table = self.tables["item"]
            rows["item"] = admit(table, self.filter, "item", events.items, events.seconds, start)
            unseen: dict[str, int] = {}
            for i in np.flatnonzero(rows["item"] < 0).tolist():
                unseen.setdefault(events.items[i], i)
            metas = meta_at(events, list(unseen.values()))
            self._cold_items.update(zip(unseen, metas, strict=True))
        for kind, pairs in batch.pairs.items():
            self._step(kind, rows[kind][pairs.at], pairs.users, pairs.label, pairs.weight, True)
        if batch.negatives is not None:
            self._negatives(batch.negatives)

    def _negatives(self, negatives: Negatives) -> None:
        """The item half of label-0 pairs: given items, or items drawn uniformly from this
        shard's (never the liked one)."""
        table = self.tables["item"]
        m = len(negatives.shown)
        rows = np.full(m, -1, dtype=np.int64)
        given = [i for i, item in enumerate(negatives.shown) if item is not None]
        rows[given] = table.rows_of([negatives.shown[i] for i in given])
        draw = np.setdiff1d(np.arange(m), given)
        rows[draw] = table.sample_rows(self.rng, len(draw))
        same = np.asarray(table.keys_at(rows), dtype=object) == np.asarray(negatives.liked, object)
        rows[same] = -1
        move = self.config.negatives_move_items
        self._step("item", rows, negatives.users, np.zeros(m), np.ones(m), move)

    def _step(
        self, kind: str, rows: Ints, users: Vectors, label: Floats, weight: Floats, move: bool
    ) -> None:
        """The target half of each pair whose target has a row here."""
        ok = np.flatnonzero(rows >= 0)
        if not len(ok):
            return
        table = self.tables[kind]
        v = table.gather(rows[ok])
        _, dv = logistic_step(users[ok], v, label[ok], weight[ok], self.config)
        if move:
            table.add(rows[ok], dv)
        self.updates += len(ok)

    def _lookup(self, kind: str, mirror: Mirror) -> Lookup:
        """Vectors of one kind: this shard's own, else as last published by their shard."""
        return first_of(table_lookup(self.tables[kind]), mirror.lookup(kind))

    def _cold(self, mirror: Mirror) -> ColdItems:
        """Items' cold vectors: the mean of their creator's and tags' vectors."""
        creators, tags = self._lookup("creator", mirror), self._lookup("tag", mirror)
        dim, bias = self.config.dim, self.config.item_bias

        def cold(metas: list[Meta]) -> tuple[Vectors, Bools]:
            return cold_item_vectors(dim, bias, creators, tags, metas)

        return cold

    def copied(self, whole: bool = False) -> MirrorUpdate:
        """For the mirrors: the vectors that changed since they last heard from this shard
        (`whole`: every vector it holds, as after a start, when they have none of them)."""
        update = MirrorUpdate(self.shard)
        for kind, table in self.tables.items():
            changed = table.take_changed(COPIED)
            update.vectors[kind] = table.items() if whole else changed
        return update

    def publish(self, mirror: Mirror, whole: bool = False) -> tuple[Published, MirrorUpdate]:
        """Expire idle ids, then publish: for the flow's outputs the items that changed
        since the last call (cold ones: their creator's and tags' mean), for the mirrors what
        `copied` holds and the ids that went."""
        out = Published()
        removed: dict[str, list[str]] = {}
        for kind, table in self.tables.items():
            gone = [] if self.newest_s is None else table.expire(self.newest_s - self.config.ttl_s)
            removed[kind] = gone
        removed["item"].extend(self._forgotten)
        self._forgotten = []
        out.expired_items = removed["item"]
        items = self.tables["item"]
        keys, matrix = items.take_changed(PUBLISHED)
        out.items.extend(keys)
        out.item_vectors.extend(matrix)
        out.item_cold.extend([False] * len(keys))
        cold_items = [(i, meta) for i, meta in self._cold_items.items() if i not in items]
        vectors, has = self._cold(mirror)([meta for _, meta in cold_items])
        for k in np.flatnonzero(has).tolist():
            out.items.append(cold_items[k][0])
            out.item_vectors.append(vectors[k])
            out.item_cold.append(True)
        self._cold_items = {}
        update = self.copied(whole)
        update.removed = removed
        return out, update

    def load(self, ids: list[str], vectors: Vectors, seen_s: int) -> None:
        """Start from item vectors learned before (already published)."""
        self.tables["item"].insert(ids, vectors, seen_s)
        self.tables["item"].take_changed()

    def nbytes(self) -> int:
        return sum(t.nbytes() for t in self.tables.values()) + self.filter.nbytes

    def live_ids(self) -> dict[str, int]:
        return {kind: len(t) for kind, t in self.tables.items()}
