"""The online learner split into shards of users and shards of items (pure): Monolith's
parameter servers, one table split by id over the embeddings flow's workers.

A user shard (`models.user_shard`) owns the rows of the users that hash to it: their filter
counts, first sessions and vectors. An item shard (`models.item_shard`) owns the rows of the
items, creators and tags that hash to it. A batch goes to the user shard of each event's
user, which

- admits its users and steps the user half of every (user, target) pair against the
  target's vector in the `Mirror` (the item shards' latest publication);
- sends each item shard a `ToItems`: the sightings of its ids (counted by its filter,
  touched for expiry) and its pairs, each with the user's vector as the step saw it.

An item shard admits its ids, steps the target half of each pair against its own current
vector, and publishes to the flow's outputs and to every mirror. Each half of a pair is
`models.online`'s step, except that the user's half reads the target as last published.
This module holds what goes between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.frequency import CountMinFilter
from models.items import keys_of, stable_ids
from models.learning import LearnerConfig, Swipes
from swipeloop.arrays import Floats, Ints, Vectors

MIN_SKETCH_WIDTH = 1 << 12


def shard_of(keys: Sequence[str], shards: int) -> Ints:
    """Each id's shard: a stable hash (the same in every process and run), modulo `shards`."""
    if shards == 1 or not len(keys):
        return np.zeros(len(keys), dtype=np.int64)
    hashed = stable_ids(keys_of(keys, len(keys)))
    return (hashed % np.uint64(shards)).astype(np.int64)


def split(swipes: Swipes, shards: int) -> list[Swipes]:
    """The batch's events by the shard of their user, each part in stream order."""
    if shards == 1:
        return [swipes]
    owner = shard_of(swipes.users, shards)
    return [swipes.subset(at) for at in by_shard(owner, shards)]


def by_shard(owner: Ints, shards: int) -> list[Ints]:
    """The positions of each shard's entries, ascending (an empty array for a shard with
    none)."""
    order = np.argsort(owner, kind="stable")
    ends = np.cumsum(np.bincount(owner, minlength=shards)).tolist()
    return np.split(order, ends[:-1])


@dataclass
class Sightings:
    """Ids of one kind that a batch saw, one entry a sighting, with its event second."""

    keys: list[str] = field(default_factory=list)
    seconds: Ints = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class Pairs:
    """(user, target) pairs whose target half an item shard steps: where the target is among
    the message's sightings of its kind, the user's vector as the user's half saw it, the
    label and the weight of each."""

    at: Ints
    users: Vectors
    label: Floats
    weight: Floats


@dataclass
class Negatives:
    """Label-0 pairs whose item half an item shard steps: the user's vector of each, and its
    item: one the user shard drew from recent impressions, or None: the item shard draws one
    uniformly from its own (never `liked`, the item of the positive it goes with)."""

    users: Vectors
    shown: list[str | None]
    liked: list[str]


@dataclass
class ToItems:
    """What one batch of a user shard asks of one item shard: every user shard sends every
    item shard one for each poll."""

    shard: int
    newest_s: int | None  # the newest event second of the poll: the item side's clock
    poll: str = ""  # which poll it is part of
    events: Swipes | None = None  # events whose item this shard owns (creator, tags: cold starts)
    creators: Sightings = field(default_factory=Sightings)
    tags: Sightings = field(default_factory=Sightings)
    pairs: dict[str, Pairs] = field(default_factory=dict)  # by kind: item, creator, tag
    negatives: Negatives | None = None


def sketch(config: LearnerConfig, shards: int) -> CountMinFilter:
    """A shard's filter: its share of one learner's width, so the sketches together take
    the memory one learner's does and halve at its pace (each counts its share of sightings)."""
    return CountMinFilter(config.min_count, max(config.sketch_width // shards, MIN_SKETCH_WIDTH))


def merge(parts: Sequence[ToItems]) -> ToItems:
    """One item shard's messages of one poll (from every user shard) as one: learned
    together, a row takes one bounded step a poll, as with a single learner
    (`EmbeddingTable.add`), not one from each user shard."""
    first = parts[0]
    clocks = [p.newest_s for p in parts if p.newest_s is not None]
    out = ToItems(first.shard, max(clocks) if clocks else None, first.poll)
    events = [p.events for p in parts if p.events is not None]
    out.events = Swipes.concat(events) if events else None
    out.creators = Sightings(
        [k for p in parts for k in p.creators.keys],
        np.concatenate([p.creators.seconds for p in parts]),
    )
    out.tags = Sightings(
        [k for p in parts for k in p.tags.keys], np.concatenate([p.tags.seconds for p in parts])
    )
    sizes = {
        "item": [0 if p.events is None else len(p.events.users) for p in parts],
        "creator": [len(p.creators.keys) for p in parts],
        "tag": [len(p.tags.keys) for p in parts],
    }
    for kind, counts in sizes.items():
        starts = np.cumsum([0, *counts[:-1]])
        had = [(p.pairs[kind], at) for p, at in zip(parts, starts, strict=True) if kind in p.pairs]
        if had:
            out.pairs[kind] = Pairs(
                np.concatenate([pairs.at + at for pairs, at in had]),
                np.concatenate([pairs.users for pairs, _ in had]),
                np.concatenate([pairs.label for pairs, _ in had]),
                np.concatenate([pairs.weight for pairs, _ in had]),
            )
    negatives = [p.negatives for p in parts if p.negatives is not None]
    if negatives:
        out.negatives = Negatives(
            np.concatenate([n.users for n in negatives]),
            [item for n in negatives for item in n.shown],
            [item for n in negatives for item in n.liked],
        )
    return out
