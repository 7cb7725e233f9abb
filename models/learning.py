"""What every online learner of user and item vectors shares (pure): its settings, the batch
and publication shapes, and the steps on a table.

A step is logistic SGD on a (user, target) pair: u·v scored, the loss's gradient taken for
both sides from the vectors as they were before the batch (`logistic_step`). An id gets a row
only once the frequency filter has counted it `min_count` times (`admit`), starting from a
cold vector where there is one (`means` of what it is made of) plus a little noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.embeddings import EmbeddingTable
from models.frequency import CountMinFilter
from models.items import keys_of, stable_ids
from swipeloop.arrays import Bools, Floats, Ints, Vectors

Meta = tuple[str | None, tuple[str, ...]]  # an item's creator and tags
# where newly admitted ids start (ids, their first event): cold vectors, and which have one
Starts = Callable[[list[str], list[int]], tuple[Vectors, Bools]]
# the vectors some ids have (stacked, in order) and which ids have one
Lookup = Callable[[Sequence[str | None]], tuple[Vectors, Bools]]
KINDS = ("user", "item", "creator", "tag")
# keeps the sketch counts of a user and an item with the same name apart
KIND_SALT = {
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

    @staticmethod
    def concat(parts: Sequence[Swipes]) -> Swipes:
        """The batches one after the other."""
        starts = np.cumsum([0, *(len(p.users) for p in parts[:-1])])
        tag_event = [p.tag_event + at for p, at in zip(parts, starts, strict=True)]
        return Swipes(
            users=[u for p in parts for u in p.users],
            items=[i for p in parts for i in p.items],
            creators=[c for p in parts for c in p.creators],
            weights=np.concatenate([p.weights for p in parts]),
            impression=np.concatenate([p.impression for p in parts]),
            seconds=np.concatenate([p.seconds for p in parts]),
            tag_event=np.concatenate(tag_event),
            tags=[t for p in parts for t in p.tags],
        )

    def subset(self, events: Ints) -> Swipes:
        """The events at these (ascending) positions, their tags with them."""
        listed = events.tolist()
        first = np.searchsorted(self.tag_event, events, "left")
        count = np.searchsorted(self.tag_event, events, "right") - first
        tag_rows = np.repeat(first - np.cumsum(count) + count, count) + np.arange(count.sum())
        return Swipes(
            users=[self.users[i] for i in listed],
            items=[self.items[i] for i in listed],
            creators=[self.creators[i] for i in listed],
            weights=self.weights[events],
            impression=self.impression[events],
            seconds=self.seconds[events],
            tag_event=np.repeat(np.arange(len(events)), count),
            tags=[self.tags[i] for i in tag_rows.tolist()],
        )


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


def meta_at(swipes: Swipes, events: list[int]) -> list[Meta]:
    """The creator and tags of the items of these events."""
    first = np.searchsorted(swipes.tag_event, events, "left").tolist()
    end = np.searchsorted(swipes.tag_event, events, "right").tolist()
    return [
        (swipes.creators[e], tuple(swipes.tags[a:b]))
        for e, a, b in zip(events, first, end, strict=True)
    ]


def uniform_draws(rng: np.random.Generator, n: int, share: float) -> Bools:
    """Which of `n` negatives are drawn uniformly over items (the rest: from impressions)."""
    if share >= 1.0:
        return np.ones(n, dtype=bool)
    if share <= 0.0:
        return np.zeros(n, dtype=bool)
    return np.asarray(rng.random(n) < share)


def sigmoid(x: Floats) -> Floats:
    out: Floats = 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))
    return out


def noise(rng: np.random.Generator, n: int, dim: int) -> Vectors:
    """Where an id without a cold vector starts: small, so scores start near 0."""
    return rng.normal(0.0, 0.1 / np.sqrt(dim), (n, dim)).astype(np.float32)


def admit(
    table: EmbeddingTable,
    sketch: CountMinFilter,
    kind: str,
    keys: Sequence[str | None],
    seconds: Ints,
    start: Callable[[list[str], list[int]], Vectors],
) -> Ints:
    """Each key's row (-1: none): counted by the filter, admitted (from `start(new ids, their
    first event)`) when it passes, and marked seen at its event second."""
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
        hashed = stable_ids(keys_of(names, len(names))) ^ KIND_SALT[kind]
        for i in waiting[sketch.add(hashed)].tolist():
            new.setdefault(named[i], present[i])
    if new:
        table.insert(list(new), start(list(new), list(new.values())), int(seconds.max()))
        found = table.rows_of(named)
    at = np.asarray(present, dtype=np.int64)
    rows[at] = found
    table.touch(found, seconds[at])
    return rows


def starting(
    rng: np.random.Generator, config: LearnerConfig, kind: str, starts: Starts | None
) -> Callable[[list[str], list[int]], Vectors]:
    """New ids' first vectors: noise, or their cold vector plus a little noise (siblings
    differ); a user's bias coordinate at its constant 1."""

    def start(fresh: list[str], events: list[int]) -> Vectors:
        out = noise(rng, len(fresh), config.dim)
        if starts is not None:
            cold, has = starts(fresh, events)
            out[has] = cold[has] + 0.1 * out[has]
        if kind == "user" and config.item_bias:
            out[:, -1] = 1.0
        return out

    return start


def logistic_step(
    u: Vectors, v: Vectors, label: Floats, weight: Floats, config: LearnerConfig
) -> tuple[Vectors, Vectors]:
    """One logistic SGD step per (user, target) pair: the user's delta and the target's."""
    lr, reg = config.lr, config.reg
    score = np.einsum("ij,ij->i", u, v)
    g = (lr * weight * (label - sigmoid(score))).astype(np.float32)[:, None]
    du = g * v - lr * reg * u
    if config.item_bias:
        du[:, -1] = 0.0  # the user's bias coordinate stays 1
    return du, g * u - lr * reg * v


def table_lookup(table: EmbeddingTable) -> Lookup:
    """The vectors a table holds, as a `Lookup`."""

    def lookup(keys: Sequence[str | None]) -> tuple[Vectors, Bools]:
        rows = table.rows_of(keys)
        has = rows >= 0
        return table.gather(rows[has]), has

    return lookup


def first_of(*lookups: Lookup) -> Lookup:
    """Each id's vector from the first lookup that has one."""

    def lookup(keys: Sequence[str | None]) -> tuple[Vectors, Bools]:
        vectors, has = lookups[0](keys)
        for other in lookups[1:]:
            missing = np.flatnonzero(~has)
            if not len(missing):
                break
            more, found = other([keys[i] for i in missing.tolist()])
            out = np.empty((len(keys), vectors.shape[1]), np.float32)
            out[has] = vectors
            out[missing[found]] = more
            has = has.copy()
            has[missing[found]] = True
            vectors = out[has]
        return vectors, has

    return lookup


def means(
    dim: int, groups: int, parts: list[tuple[Lookup, Sequence[str | None], Ints]]
) -> tuple[Vectors, Bools]:
    """The mean vector of each of `groups` groups over the ids (lookup, keys, group of each)
    that have a vector; and whether a group had any."""
    sums = np.zeros((groups, dim), dtype=np.float32)
    counts = np.zeros(groups)
    for lookup, keys, group in parts:
        vectors, ok = lookup(keys)
        if ok.any():
            np.add.at(sums, group[ok], vectors)
            counts += np.bincount(group[ok], minlength=groups)
    has = counts > 0
    sums[has] /= counts[has, None].astype(np.float32)
    return sums, has


def cold_item_vectors(
    dim: int, item_bias: bool, creators: Lookup, tags: Lookup, metas: list[Meta]
) -> tuple[Vectors, Bools]:
    """Each item's cold vector: the mean of its creator's and tags' vectors (and whether
    any of them has one), with a bias of 0: a tag's bias is learned from every positive
    of its items and no sampled negative, and inherited it would rank each new item
    above established ones."""
    item_creators = [creator for creator, _ in metas]
    item_tags = [tag for _, its in metas for tag in its]
    group = np.repeat(np.arange(len(metas)), [len(its) for _, its in metas])
    vectors, has = means(
        dim,
        len(metas),
        [(creators, item_creators, np.arange(len(metas))), (tags, item_tags, group)],
    )
    if item_bias:
        vectors[:, -1] = 0.0
    return vectors, has


def cold_user_vectors(
    dim: int, item_bias: bool, items: Lookup, sessions: list[list[str]]
) -> tuple[Vectors, Bools]:
    """Each new user's cold vector: the mean of their first session's items' vectors."""
    keys = [item for session in sessions for item in session]
    group = np.repeat(np.arange(len(sessions)), [len(session) for session in sessions])
    vectors, has = means(dim, len(sessions), [(items, keys, group)])
    if item_bias:
        vectors[has, -1] = 1.0
    return vectors, has


class CatalogChanges:
    """Uploads and deletions for a learner that owns item rows: an upload gets a cold vector
    before any event, a deleted item's vector goes (published as expired)."""

    tables: dict[str, EmbeddingTable]
    _cold_items: dict[str, Meta]
    _forgotten: list[str]

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
