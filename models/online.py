"""Online matrix factorization: user and item vectors that learn from every swipe (pure).

The method is logistic matrix factorization trained by SGD on the event stream, one
mini-batch per poll:

- a user's engagement with an item says "score u·v up" (label 1) or "down" (label 0),
  weighted by how strongly: `models.features.weights.affinity_weights` (the watched fraction of a
  play, loops, likes, shares, follows up; early skips, not-interested and blocks down);
- the last coordinate is an item bias: users hold a constant 1 there and items learn it, so
  u·v = taste + how well the item does with everyone, and inner-product search still ranks
  by it (a MovieLens replay, with the negatives below: recall@100 0.19 with it, 0.05
  without, popularity 0.14);
- each positive also draws `negatives` label-0 examples: items drawn uniformly from those
  with a vector (`uniform_negatives`; the rest from a reservoir of recent impressions) that
  move the item too, so an item's bias settles at how often it is liked relative to the
  catalogue (impression-drawn negatives cancel the popularity the bias is there to learn);
- the item's creator and tags are trained against the user in the same way, as if they
  were items: they live in the same space, and a new video's vector is the mean of its
  creator's and tags' until it earns its own (cold start);
- a user who has no vector yet is served the mean of the items of their first session.

Why factorization rather than item2vec: retrieval asks "which items score highest for this
user", which is u·v, and the user vector is learned here, from every swipe, instead of
being rebuilt from item vectors at request time.

Monolith's table rules hold for every kind of id (`models.embeddings`,
`models.frequency`): no shared rows, a row only after `min_count` sightings, rows freed
after `ttl_s` of event time without a sighting.

This is the whole table in one learner; `models.shards` splits the same method over shards
of users and of items (the embeddings flow's parameter servers).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from models.embeddings import EmbeddingTable
from models.frequency import CountMinFilter
from models.learning import (
    KINDS,
    CatalogChanges,
    LearnerConfig,
    Meta,
    Published,
    Starts,
    Swipes,
    admit,
    cold_item_vectors,
    cold_user_vectors,
    logistic_step,
    meta_at,
    starting,
    table_lookup,
    uniform_draws,
)
from models.recent import Reservoir, Sessions
from swipeloop.arrays import Bools, Floats, Ints, Vectors

__all__ = ["KINDS", "LearnerConfig", "OnlineMF", "Published", "Swipes"]


class OnlineMF(CatalogChanges):
    """The tables, the frequency filter and the state of cold starts; `learn` a batch,
    `publish` what changed."""

    def __init__(self, config: LearnerConfig, seed: int = 0) -> None:
        self.config = config
        self.tables = {kind: EmbeddingTable(config.dim, fp16=config.fp16) for kind in KINDS}
        self.filter = CountMinFilter(config.min_count, config.sketch_width)
        self.rng = np.random.default_rng(seed)
        self.reservoir = Reservoir(config.reservoir)
        self.newest_s: int | None = None
        self.updates = 0  # gradient steps applied, all kinds together
        # new users: the items of their first session (positives only)
        self.sessions = Sessions(config.session_items, config.pending_users)
        # items without a vector of their own that had events: (creator, tags)
        self._cold_items: dict[str, Meta] = {}
        self._forgotten: list[str] = []  # deleted items, to publish as gone
        self._erased: list[str] = []  # erased users, to publish as gone

    @property
    def pending(self) -> dict[str, list[str]]:
        """New users' first sessions (the items they liked), least recent first."""
        return self.sessions.items

    # --- learning -------------------------------------------------------------------------

    def learn(self, swipes: Swipes) -> None:
        """Admit, touch and train on one batch."""
        if not len(swipes.users):
            return
        self.newest_s = max(self.newest_s or 0, int(swipes.seconds.max()))
        self.reservoir.remember([swipes.items[i] for i in np.flatnonzero(swipes.impression)])
        creators = self._rows("creator", swipes.creators, swipes.seconds)
        tags = self._rows("tag", swipes.tags, swipes.seconds[swipes.tag_event])
        items = self._rows("item", swipes.items, swipes.seconds, self._item_starts(swipes))
        users = self._rows("user", swipes.users, swipes.seconds, self._user_starts)
        self._note_cold(swipes, users, items)

        w = swipes.weights
        acted = (w != 0) & (users >= 0)
        label = (w > 0).astype(np.float64)
        strength = np.abs(w)
        for table, target in (("item", items), ("creator", creators)):
            on = np.flatnonzero(acted & (target >= 0))
            self._step(users[on], table, target[on], label[on], strength[on], move=True)
        if len(swipes.tags):
            ev = swipes.tag_event
            on = np.flatnonzero(acted[ev] & (tags >= 0))
            self._step(users[ev[on]], "tag", tags[on], label[ev[on]], strength[ev[on]], True)
        self._negatives(users, items, w)

    def _rows(
        self,
        kind: str,
        keys: list[str] | list[str | None],
        seconds: Ints,
        starts: Starts | None = None,
    ) -> Ints:
        """Each key's row (-1: none): counted by the filter, admitted when it passes, and
        marked seen."""
        start = starting(self.rng, self.config, kind, starts)
        return admit(self.tables[kind], self.filter, kind, keys, seconds, start)

    def _item_starts(self, swipes: Swipes) -> Starts:
        """A newly admitted item starts from its cold vector (creator and tags), if any."""

        def starts(_new: list[str], events: list[int]) -> tuple[Vectors, Bools]:
            return self.cold_item_vectors(meta_at(swipes, events))

        return starts

    def _user_starts(self, new: list[str], _events: list[int]) -> tuple[Vectors, Bools]:
        """A newly admitted user starts from the items of their first session, if any."""
        return self.cold_user_vectors([self.sessions.pop(user) or [] for user in new])

    def _note_cold(self, swipes: Swipes, users: Ints, items: Ints) -> None:
        """Items without a vector get a cold one published; users without one remember the
        items they liked in their first session."""
        cold: dict[str, int] = {}
        for i in np.flatnonzero(items < 0).tolist():
            cold.setdefault(swipes.items[i], i)
        metas = meta_at(swipes, list(cold.values()))
        self._cold_items.update(zip(cold, metas, strict=True))
        for i in np.flatnonzero((users < 0) & (swipes.weights > 0)).tolist():
            self.sessions.like(swipes.users[i], swipes.items[i])

    def _negatives(self, users: Ints, items: Ints, weights: Floats) -> None:
        """Label-0 steps for users toward items drawn uniformly from those with a vector
        (a `uniform_negatives` share) and from recent impressions (the rest)."""
        k, share = self.config.negatives, self.config.uniform_negatives
        positive = np.flatnonzero((weights > 0) & (users >= 0))
        if not k or not len(positive):
            return
        n = len(positive) * k
        table = self.tables["item"]
        uniform = uniform_draws(self.rng, n, share)
        rows = np.full(n, -1, dtype=np.int64)
        if uniform.any():
            rows[uniform] = table.sample_rows(self.rng, int(uniform.sum()))
        shown = ~uniform
        if shown.any() and self.reservoir.size:
            rows[shown] = table.rows_of(self.reservoir.draw(self.rng, int(shown.sum())))
        owner = np.repeat(positive, k)
        ok = (rows >= 0) & (rows != items[owner])
        m = int(ok.sum())
        move = self.config.negatives_move_items
        self._step(users[owner[ok]], "item", rows[ok], np.zeros(m), np.ones(m), move=move)

    def _step(
        self, users: Ints, kind: str, targets: Ints, label: Floats, weight: Floats, move: bool
    ) -> None:
        """One logistic SGD step per (user, target) pair, summed per row (`EmbeddingTable.add`)."""
        if not len(users):
            return
        u_table, t_table = self.tables["user"], self.tables[kind]
        du, dv = logistic_step(
            u_table.gather(users), t_table.gather(targets), label, weight, self.config
        )
        u_table.add(users, du)
        if move:
            t_table.add(targets, dv)
        self.updates += len(users)

    # --- cold starts ----------------------------------------------------------------------

    def cold_item_vectors(self, metas: list[Meta]) -> tuple[Vectors, Bools]:
        """Each item's cold vector: the mean of its creator's and tags' vectors
        (`models.learning.cold_item_vectors`)."""
        creators, tags = table_lookup(self.tables["creator"]), table_lookup(self.tables["tag"])
        return cold_item_vectors(self.config.dim, self.config.item_bias, creators, tags, metas)

    def cold_user_vectors(self, sessions: list[list[str]]) -> tuple[Vectors, Bools]:
        """Each new user's cold vector: the mean of their first session's items' vectors."""
        items = table_lookup(self.tables["item"])
        return cold_user_vectors(self.config.dim, self.config.item_bias, items, sessions)

    def forget_users(self, users: Iterable[str]) -> None:
        """Erased users: their vectors and first sessions go, each published as expired (a
        tombstone) if it had either."""
        for user in users:
            pending = self.sessions.pop(user) is not None
            if self.tables["user"].remove([user]) or pending:
                self._erased.append(user)

    # --- publication ----------------------------------------------------------------------

    def publish(self) -> Published:
        """Expire idle ids, then everything that changed since the last call."""
        out = Published()
        items = self.tables["item"]
        if self.newest_s is not None:
            before = self.newest_s - self.config.ttl_s
            expired = {kind: self.tables[kind].expire(before) for kind in KINDS}
            out.expired_items, out.expired_users = expired["item"], expired["user"]
        out.expired_items.extend(self._forgotten)
        self._forgotten = []
        out.expired_users.extend(self._erased)
        self._erased = []
        for kind, ids, own, cold in (
            ("item", out.items, out.item_vectors, out.item_cold),
            ("user", out.users, out.user_vectors, out.user_cold),
        ):
            keys, matrix = self.tables[kind].take_changed()
            ids.extend(keys)
            own.extend(matrix)
            cold.extend([False] * len(keys))
        cold_items = [(i, meta) for i, meta in self._cold_items.items() if i not in items]
        vectors, has = self.cold_item_vectors([meta for _, meta in cold_items])
        for k in np.flatnonzero(has).tolist():
            out.items.append(cold_items[k][0])
            out.item_vectors.append(vectors[k])
            out.item_cold.append(True)
        self._cold_items = {}
        new_users = self.sessions.take_changed()
        vectors, has = self.cold_user_vectors([session for _, session in new_users])
        for k in np.flatnonzero(has).tolist():
            out.users.append(new_users[k][0])
            out.user_vectors.append(vectors[k])
            out.user_cold.append(True)
        return out

    def nbytes(self) -> int:
        tables = sum(t.nbytes() for t in self.tables.values())
        return tables + self.filter.nbytes + self.reservoir.nbytes

    def live_ids(self) -> int:
        return sum(len(t) for t in self.tables.values())
