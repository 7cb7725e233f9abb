"""One shard of users (pure): their rows, filter counts and first sessions, and the user half
of every step, taken against the item side's published vectors (`models.shards`)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from models.embeddings import EmbeddingTable
from models.items import keys_of
from models.learning import (
    LearnerConfig,
    Published,
    Starts,
    Swipes,
    admit,
    cold_user_vectors,
    logistic_step,
    starting,
    uniform_draws,
)
from models.mirror import Mirror
from models.recent import Reservoir, Sessions
from models.shards import Negatives, Pairs, Sightings, ToItems, by_shard, shard_of, sketch
from swipeloop.arrays import Bools, Floats, Ints, Vectors


class UserShard:
    """The users that hash to one shard of `shards`."""

    def __init__(self, config: LearnerConfig, shard: int, shards: int, seed: int = 0) -> None:
        self.config, self.shard, self.shards = config, shard, shards
        self.table = EmbeddingTable(config.dim, fp16=config.fp16)
        self.filter = sketch(config, shards)
        self.rng = np.random.default_rng((seed, 0, shard))
        self.reservoir = Reservoir(max(1, config.reservoir // shards))
        self.sessions = Sessions(config.session_items, max(1, config.pending_users // shards))
        self.newest_s: int | None = None
        self.steps = 0  # user halves of steps taken
        self._erased: list[str] = []

    def learn(self, swipes: Swipes, mirror: Mirror, newest_s: int | None) -> list[ToItems]:
        """Learn a batch of this shard's users (`newest_s`: the whole poll's newest second);
        what each item shard must learn of it, one `ToItems` for every item shard."""
        if newest_s is not None:
            self.newest_s = max(self.newest_s or 0, newest_s)
        out = [ToItems(k, self.newest_s) for k in range(self.shards)]
        if not len(swipes.users):
            return out
        self.reservoir.remember([swipes.items[i] for i in np.flatnonzero(swipes.impression)])
        start = starting(self.rng, self.config, "user", self._starts(mirror))
        users = admit(self.table, self.filter, "user", swipes.users, swipes.seconds, start)
        for i in np.flatnonzero((users < 0) & (swipes.weights > 0)).tolist():
            self.sessions.like(swipes.users[i], swipes.items[i])
        owners, slots = self._sightings(swipes, out)

        w = swipes.weights
        acted = (w != 0) & (users >= 0)
        label = (w > 0).astype(np.float64)
        strength = np.abs(w)
        every = np.arange(len(w))
        for kind, keys, ev in (
            ("item", swipes.items, every),
            ("creator", swipes.creators, every),
            ("tag", swipes.tags, swipes.tag_event),
        ):
            on = np.flatnonzero(acted[ev] & (owners[kind] >= 0))
            targets: list[str] = [keys[i] for i in on.tolist()]  # type: ignore[misc]
            e = ev[on]
            u = self._step(mirror, kind, users[e], targets, label[e], strength[e])
            for k, at in enumerate(by_shard(owners[kind][on], self.shards)):
                if len(at):
                    ea = e[at]
                    out[k].pairs[kind] = Pairs(slots[kind][on[at]], u[at], label[ea], strength[ea])
        self._negatives(mirror, out, users, swipes.items, w)
        return out

    def _starts(self, mirror: Mirror) -> Starts:
        """A newly admitted user starts from the items of their first session, if any."""

        def starts(new: list[str], _events: list[int]) -> tuple[Vectors, Bools]:
            sessions = [self.sessions.pop(user) or [] for user in new]
            return cold_user_vectors(
                self.config.dim, self.config.item_bias, mirror.lookup("item"), sessions
            )

        return starts

    def _sightings(
        self, swipes: Swipes, out: list[ToItems]
    ) -> tuple[dict[str, Ints], dict[str, Ints]]:
        """Each item shard's sightings of its ids; and for every item, creator and tag of
        the batch, its shard (-1: no creator) and its place among that shard's sightings."""
        n = len(swipes.users)
        named = [(i, c) for i, c in enumerate(swipes.creators) if c is not None]
        present = np.asarray([i for i, _ in named], np.int64)
        creators = [c for _, c in named]
        owners = {
            "item": shard_of(swipes.items, self.shards),
            "creator": np.full(n, -1, dtype=np.int64),
            "tag": shard_of(swipes.tags, self.shards),
        }
        owners["creator"][present] = shard_of(creators, self.shards)
        slots = {kind: np.zeros(len(owner), np.int64) for kind, owner in owners.items()}
        for k, at in enumerate(by_shard(owners["item"], self.shards)):
            if len(at):
                out[k].events = swipes if len(at) == n else swipes.subset(at)
                slots["item"][at] = np.arange(len(at))
        for k, at in enumerate(by_shard(owners["creator"][present], self.shards)):
            if len(at):
                keys = [creators[i] for i in at.tolist()]
                out[k].creators = Sightings(keys, swipes.seconds[present[at]])
                slots["creator"][present[at]] = np.arange(len(at))
        for k, at in enumerate(by_shard(owners["tag"], self.shards)):
            if len(at):
                keys = [swipes.tags[i] for i in at.tolist()]
                out[k].tags = Sightings(keys, swipes.seconds[swipes.tag_event[at]])
                slots["tag"][at] = np.arange(len(at))
        return owners, slots

    def _step(
        self,
        mirror: Mirror,
        kind: str,
        users: Ints,
        targets: list[str],
        label: Floats,
        weight: Floats,
    ) -> Vectors:
        """The user half of each pair, against the target's published vector; the users'
        vectors as the step saw them (for the target half)."""
        u = self.table.gather(users)
        if not len(users):
            return u
        v, has = mirror.lookup(kind)(targets)
        if has.any():
            du, _ = logistic_step(u[has], v, label[has], weight[has], self.config)
            self.table.add(users[has], du)
            self.steps += int(has.sum())
        return u

    def _negatives(
        self, mirror: Mirror, out: list[ToItems], users: Ints, items: list[str], weights: Floats
    ) -> None:
        """Label-0 pairs of users with items drawn uniformly from those with a vector (a
        `uniform_negatives` share) and from this shard's recent impressions (the rest).

        The user half of a uniform one draws from the mirror, its item half is drawn by an
        item shard chosen at random from its own items: two draws from the same items, so
        both halves learn as from one, and items get their negatives before the mirror has
        any (a shard's first seconds), which keeps their biases from running up."""
        k, share = self.config.negatives, self.config.uniform_negatives
        positive = np.flatnonzero((weights > 0) & (users >= 0))
        if not k or not len(positive):
            return
        n = len(positive) * k
        uniform = uniform_draws(self.rng, n, share)
        shown = np.flatnonzero(~uniform)
        impressions = np.full(len(shown), None, dtype=object)  # (none yet: no draw)
        if len(shown) and self.reservoir.size:
            impressions[:] = self.reservoir.draw(self.rng, len(shown))
        # the user halves, against items drawn from the mirror (by row: no lookup)
        rows = np.full(n, -1, dtype=np.int64)
        rows[uniform] = mirror.draw_items(self.rng, int(uniform.sum()))
        rows[shown] = mirror.item_rows(impressions.tolist())
        event = np.repeat(positive, k)
        liked = keys_of((items[e] for e in positive.tolist()), len(positive))
        ok = np.flatnonzero((rows >= 0) & (rows != np.repeat(mirror.item_rows(liked.tolist()), k)))
        u = self.table.gather(users[event])
        if len(ok):
            m = len(ok)
            du, _ = logistic_step(
                u[ok], mirror.item_vectors(rows[ok]), np.zeros(m), np.ones(m), self.config
            )
            self.table.add(users[event[ok]], du)
            self.steps += m
        # the item halves: the uniform ones to an item shard at random, which draws the item;
        # the impressions to their item's shard
        given = shown[impressions != None]  # noqa: E711 (elementwise)
        half = np.concatenate([np.flatnonzero(uniform), given])
        chosen = np.full(len(half), None, dtype=object)
        chosen[len(half) - len(given) :] = impressions[impressions != None]  # noqa: E711
        owner = np.concatenate(
            [
                self.rng.integers(0, self.shards, len(half) - len(given)),
                shard_of(chosen[len(half) - len(given) :].tolist(), self.shards),
            ]
        )
        liked_each = np.repeat(liked, k)
        for shard, at in enumerate(by_shard(owner, self.shards)):
            if len(at):
                picked = half[at]
                out[shard].negatives = Negatives(
                    u[picked], chosen[at].tolist(), liked_each[picked].tolist()
                )

    def publish(self, mirror: Mirror) -> Published:
        """Expire idle users, then every user vector that changed since the last call (a new
        user's: the mean of their first session's items, as published)."""
        out = Published()
        if self.newest_s is not None:
            out.expired_users = self.table.expire(self.newest_s - self.config.ttl_s)
        out.expired_users.extend(self._erased)
        self._erased = []
        keys, matrix = self.table.take_changed()
        out.users.extend(keys)
        out.user_vectors.extend(matrix)
        out.user_cold.extend([False] * len(keys))
        new_users = self.sessions.take_changed()
        vectors, has = cold_user_vectors(
            self.config.dim,
            self.config.item_bias,
            mirror.lookup("item"),
            [session for _, session in new_users],
        )
        for k in np.flatnonzero(has).tolist():
            out.users.append(new_users[k][0])
            out.user_vectors.append(vectors[k])
            out.user_cold.append(True)
        return out

    def forget_users(self, users: Iterable[str]) -> None:
        """Erased users: their vectors and first sessions go, each published as expired (a
        tombstone) if it had either."""
        for user in users:
            pending = self.sessions.pop(user) is not None
            if self.table.remove([user]) or pending:
                self._erased.append(user)

    def load(self, ids: list[str], vectors: Vectors, seen_s: int) -> None:
        """Start from vectors learned before (already published)."""
        self.table.insert(ids, vectors, seen_s)
        self.table.take_changed()

    def nbytes(self) -> int:
        return self.table.nbytes() + self.filter.nbytes + self.reservoir.nbytes
