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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.embeddings import EmbeddingTable
from models.frequency import CountMinFilter
from models.items import keys_of, stable_ids
from swipeloop.arrays import Bools, Floats, Ints, Vectors

Meta = tuple[str | None, tuple[str, ...]]  # an item's creator and tags
# where newly admitted ids start (ids, their first event): cold vectors, and which have one
Starts = Callable[[list[str], list[int]], tuple[Vectors, Bools]]
KINDS = ("user", "item", "creator", "tag")
# keeps the sketch counts of a user and an item with the same name apart
_KIND_SALT = {
    kind: np.uint64((0x9E37_79B9_7F4A_7C15 * (i + 1)) % 2**64) for i, kind in enumerate(KINDS)
}


@dataclass(frozen=True)
class LearnerConfig:
    dim: int = 64
    lr: float = 0.1
    reg: float = 0.001  # L2 pull toward 0 on every step: vectors stay bounded
    negatives: int = 3  # label-0 items drawn per positive
    uniform_negatives: float = 1.0  # share drawn uniformly over items (rest: impressions)
    negatives_move_items: bool = True  # a drawn negative steps the item as well as the user
    item_bias: bool = True  # last coordinate: 1 for users, a learned bias for items
    min_count: int = 5  # sightings before an id gets a vector
    ttl_s: int = 7 * 86_400  # event seconds without a sighting before its vector goes
    fp16: bool = False
    session_items: int = 20  # items of a new user's first session kept for their vector
    pending_users: int = 100_000  # new users whose first session is kept (least recent go)
    reservoir: int = 100_000  # recent impressions to draw negatives from
    sketch_width: int = 1 << 20


@dataclass
class Swipes:
    """A batch of events as columns, in stream order; tags flattened as (event, tag)."""

    users: list[str]
    items: list[str]
    creators: list[str | None]
    weights: Floats  # > 0: more like this, < 0: less, 0: neutral (an impression)
    impression: Bools
    seconds: Ints
    tag_event: Ints = field(default_factory=lambda: np.zeros(0, np.int64))  # ascending
    tags: list[str] = field(default_factory=list)


@dataclass
class Published:
    """What changed since the last publication: vectors (cold: not the id's own yet) and
    ids that expired."""

    items: list[str] = field(default_factory=list)
    item_vectors: list[Vectors] = field(default_factory=list)
    item_cold: list[bool] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    user_vectors: list[Vectors] = field(default_factory=list)
    user_cold: list[bool] = field(default_factory=list)
    expired_items: list[str] = field(default_factory=list)
    expired_users: list[str] = field(default_factory=list)


def _meta_at(swipes: Swipes, events: list[int]) -> list[Meta]:
    """The creator and tags of the items of these events."""
    first = np.searchsorted(swipes.tag_event, events, "left").tolist()
    end = np.searchsorted(swipes.tag_event, events, "right").tolist()
    return [
        (swipes.creators[e], tuple(swipes.tags[a:b]))
        for e, a, b in zip(events, first, end, strict=True)
    ]


def _sigmoid(x: Floats) -> Floats:
    out: Floats = 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))
    return out


class OnlineMF:
    """The tables, the frequency filter and the state of cold starts; `learn` a batch,
    `publish` what changed."""

    def __init__(self, config: LearnerConfig, seed: int = 0) -> None:
        self.config = config
        self.tables = {kind: EmbeddingTable(config.dim, fp16=config.fp16) for kind in KINDS}
        self.filter = CountMinFilter(config.min_count, config.sketch_width)
        self.rng = np.random.default_rng(seed)
        self.reservoir = np.empty(config.reservoir, dtype=object)
        self.reservoir_size = 0
        self.reservoir_at = 0
        self.newest_s: int | None = None
        self.updates = 0  # gradient steps applied, all kinds together
        # new users: the items of their first session (positives only), least recent first
        self.pending: OrderedDict[str, list[str]] = OrderedDict()
        self._pending_changed: set[str] = set()
        # items without a vector of their own that had events: (creator, tags)
        self._cold_items: dict[str, Meta] = {}
        self._forgotten: list[str] = []  # deleted items, to publish as gone
        self._erased: list[str] = []  # erased users, to publish as gone

    # --- learning -------------------------------------------------------------------------

    def learn(self, swipes: Swipes) -> None:
        """Admit, touch and train on one batch."""
        if not len(swipes.users):
            return
        self.newest_s = max(self.newest_s or 0, int(swipes.seconds.max()))
        self._remember_impressions(swipes)
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

    def _remember_impressions(self, swipes: Swipes) -> None:
        shown = [swipes.items[i] for i in np.flatnonzero(swipes.impression).tolist()]
        size = len(self.reservoir)
        for start in range(0, len(shown), size):
            chunk = shown[start : start + size]
            at = (self.reservoir_at + np.arange(len(chunk))) % size
            self.reservoir[at] = chunk
            self.reservoir_at = int((self.reservoir_at + len(chunk)) % size)
            self.reservoir_size = min(size, self.reservoir_size + len(chunk))

    def _rows(
        self,
        kind: str,
        keys: list[str] | list[str | None],
        seconds: Ints,
        starts: Starts | None = None,
    ) -> Ints:
        """Each key's row (-1: none): counted by the filter, admitted when it passes, and
        marked seen."""
        table = self.tables[kind]
        present = [i for i, k in enumerate(keys) if k is not None]
        named: list[str] = [keys[i] for i in present]  # type: ignore[misc]
        rows = np.full(len(keys), -1, dtype=np.int64)
        if not named:
            return rows
        found = table.rows_of(named)
        waiting = np.flatnonzero(found < 0)  # ids with a vector skip the filter
        new: dict[str, int] = {}  # newly admitted id -> its first event
        if len(waiting):
            names = [named[i] for i in waiting.tolist()]
            hashed = stable_ids(keys_of(names, len(names))) ^ _KIND_SALT[kind]
            for i in waiting[self.filter.add(hashed)].tolist():
                new.setdefault(named[i], present[i])
        if new:
            fresh = list(new)
            start = self._noise(len(fresh))
            if starts is not None:
                cold, has = starts(fresh, list(new.values()))
                start[has] = cold[has] + 0.1 * start[has]  # a little noise: siblings differ
            if kind == "user" and self.config.item_bias:
                start[:, -1] = 1.0  # the bias coordinate's constant
            table.insert(fresh, start, int(seconds.max()))
            found = table.rows_of(named)
        at = np.asarray(present, dtype=np.int64)
        rows[at] = found
        table.touch(found, seconds[at])
        return rows

    def _noise(self, n: int) -> Vectors:
        scale = 0.1 / np.sqrt(self.config.dim)
        return self.rng.normal(0.0, scale, (n, self.config.dim)).astype(np.float32)

    def _item_starts(self, swipes: Swipes) -> Starts:
        """A newly admitted item starts from its cold vector (creator and tags), if any."""

        def starts(_new: list[str], events: list[int]) -> tuple[Vectors, Bools]:
            return self.cold_item_vectors(_meta_at(swipes, events))

        return starts

    def _user_starts(self, new: list[str], _events: list[int]) -> tuple[Vectors, Bools]:
        """A newly admitted user starts from the items of their first session, if any."""
        sessions = [self.pending.pop(user, []) for user in new]
        self._pending_changed.difference_update(new)
        return self.cold_user_vectors(sessions)

    def _note_cold(self, swipes: Swipes, users: Ints, items: Ints) -> None:
        """Items without a vector get a cold one published; users without one remember the
        items they liked in their first session."""
        cold: dict[str, int] = {}
        for i in np.flatnonzero(items < 0).tolist():
            cold.setdefault(swipes.items[i], i)
        metas = _meta_at(swipes, list(cold.values()))
        self._cold_items.update(zip(cold, metas, strict=True))
        liked = np.flatnonzero((users < 0) & (swipes.weights > 0)).tolist()
        limit = self.config.session_items
        for i in liked:
            user = swipes.users[i]
            session = self.pending.pop(user, [])
            if len(session) < limit and swipes.items[i] not in session:
                session.append(swipes.items[i])
            self.pending[user] = session  # most recent last
            self._pending_changed.add(user)
        while len(self.pending) > self.config.pending_users:
            user, _ = self.pending.popitem(last=False)
            self._pending_changed.discard(user)

    def _negatives(self, users: Ints, items: Ints, weights: Floats) -> None:
        """Label-0 steps for users toward items drawn uniformly from those with a vector
        (a `uniform_negatives` share) and from recent impressions (the rest)."""
        k, share = self.config.negatives, self.config.uniform_negatives
        positive = np.flatnonzero((weights > 0) & (users >= 0))
        if not k or not len(positive):
            return
        n = len(positive) * k
        table = self.tables["item"]
        if share >= 1.0:
            uniform = np.ones(n, dtype=bool)
        elif share <= 0.0:
            uniform = np.zeros(n, dtype=bool)
        else:
            uniform = self.rng.random(n) < share
        rows = np.full(n, -1, dtype=np.int64)
        if uniform.any():
            rows[uniform] = table.sample_rows(self.rng, int(uniform.sum()))
        shown = ~uniform
        if shown.any() and self.reservoir_size:
            drawn = self.rng.integers(0, self.reservoir_size, size=int(shown.sum()))
            rows[shown] = table.rows_of(self.reservoir[drawn].tolist())
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
        lr, reg = self.config.lr, self.config.reg
        u_table, t_table = self.tables["user"], self.tables[kind]
        u, v = u_table.gather(users), t_table.gather(targets)
        score = np.einsum("ij,ij->i", u, v)
        g = (lr * weight * (label - _sigmoid(score))).astype(np.float32)[:, None]
        du = g * v - lr * reg * u
        if self.config.item_bias:
            du[:, -1] = 0.0  # the user's bias coordinate stays 1
        u_table.add(users, du)
        if move:
            t_table.add(targets, g * u - lr * reg * v)
        self.updates += len(users)

    # --- cold starts ----------------------------------------------------------------------

    def _means(
        self, groups: int, parts: list[tuple[str, Sequence[str | None], Ints]]
    ) -> tuple[Vectors, Bools]:
        """The mean vector of each of `groups` groups over the ids (kind, keys, group of
        each) that have a vector; and whether a group had any."""
        sums = np.zeros((groups, self.config.dim), dtype=np.float32)
        counts = np.zeros(groups)
        for kind, keys, group in parts:
            table = self.tables[kind]
            rows = table.rows_of(keys)
            ok = rows >= 0
            if ok.any():
                np.add.at(sums, group[ok], table.gather(rows[ok]))
                counts += np.bincount(group[ok], minlength=groups)
        has = counts > 0
        sums[has] /= counts[has, None].astype(np.float32)
        return sums, has

    def cold_item_vectors(self, metas: list[Meta]) -> tuple[Vectors, Bools]:
        """Each item's cold vector: the mean of its creator's and tags' vectors (and whether
        any of them has one), with a bias of 0: a tag's bias is learned from every positive
        of its items and no sampled negative, and inherited it would rank each new item
        above established ones."""
        creators = [creator for creator, _ in metas]
        tags = [tag for _, item_tags in metas for tag in item_tags]
        group = np.repeat(np.arange(len(metas)), [len(item_tags) for _, item_tags in metas])
        vectors, has = self._means(
            len(metas), [("creator", creators, np.arange(len(metas))), ("tag", tags, group)]
        )
        if self.config.item_bias:
            vectors[:, -1] = 0.0
        return vectors, has

    def cold_user_vectors(self, sessions: list[list[str]]) -> tuple[Vectors, Bools]:
        """Each new user's cold vector: the mean of their first session's items' vectors."""
        items = [item for session in sessions for item in session]
        group = np.repeat(np.arange(len(sessions)), [len(session) for session in sessions])
        vectors, has = self._means(len(sessions), [("item", items, group)])
        if self.config.item_bias:
            vectors[has, -1] = 1.0
        return vectors, has

    def announce(self, items: Sequence[tuple[str, str | None, tuple[str, ...]]]) -> None:
        """New uploads (item, creator, tags): published with a cold vector before any event."""
        for item, creator, tags in items:
            if item not in self.tables["item"]:
                self._cold_items[item] = (creator, tags)

    def forget_items(self, items: Sequence[str]) -> None:
        """Deleted items: their vectors go (published as expired), and they are not
        announced again."""
        for item in items:
            self._cold_items.pop(item, None)
        self._forgotten.extend(self.tables["item"].remove(items))

    def forget_users(self, users: Iterable[str]) -> None:
        """Erased users: their vectors and first sessions go, each published as expired (a
        tombstone) if it had either."""
        had = []
        for user in users:
            pending = self.pending.pop(user, None) is not None
            self._pending_changed.discard(user)
            if self.tables["user"].remove([user]) or pending:
                had.append(user)
        # (a learner snapshotted before erasures existed has no such list yet)
        self._erased = [*getattr(self, "_erased", []), *had]

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
        out.expired_users.extend(getattr(self, "_erased", []))
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
        new_users = list(self._pending_changed)
        vectors, has = self.cold_user_vectors([self.pending.get(u, []) for u in new_users])
        for k in np.flatnonzero(has).tolist():
            out.users.append(new_users[k])
            out.user_vectors.append(vectors[k])
            out.user_cold.append(True)
        self._pending_changed = set()
        return out

    def nbytes(self) -> int:
        tables = sum(t.nbytes() for t in self.tables.values())
        return tables + self.filter.nbytes + self.reservoir.nbytes

    def live_ids(self) -> int:
        return sum(len(t) for t in self.tables.values())
