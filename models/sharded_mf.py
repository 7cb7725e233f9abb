"""Every shard of both sides in one object, driven as the embeddings flow drives them (pure):
for tests and benchmarks, which learn a stream without a dataflow around it."""

from __future__ import annotations

import numpy as np

from models.item_shard import ItemShard
from models.learning import LearnerConfig, Published, Swipes, cold_user_vectors
from models.mirror import Mirror
from models.shards import ToItems, merge, shard_of, split
from models.user_shard import UserShard
from swipeloop.arrays import Vector, Vectors


class ShardedMF:
    """`shards` user shards and as many item shards around one mirror, which takes in what
    the item shards learned after every batch (the flow's are at most `COPY_EVERY_S` old)."""

    def __init__(self, config: LearnerConfig, shards: int, seed: int = 0) -> None:
        self.config, self.shards = config, shards
        self.mirror = Mirror(config.dim)
        self.users = [UserShard(config, k, shards, seed) for k in range(shards)]
        self.items = [ItemShard(config, k, shards, seed) for k in range(shards)]
        self._whole = True

    def learn(self, swipes: Swipes) -> None:
        """One poll: each user's shard learns its part, then each item shard what it is sent."""
        if not len(swipes.users):
            return
        newest = int(swipes.seconds.max())
        sent: list[list[ToItems]] = [[] for _ in self.items]
        for user_shard, part in zip(self.users, split(swipes, self.shards), strict=True):
            for batch in user_shard.learn(part, self.mirror, newest):
                sent[batch.shard].append(batch)
        for item_shard, parts in zip(self.items, sent, strict=True):
            item_shard.learn(merge(parts), self.mirror)
        for item_shard in self.items:
            self.mirror.apply(item_shard.copied(self._whole))
        self._whole = False

    def publish(self) -> Published:
        """Every shard's publication, together; the mirror takes in the item shards'."""
        out = Published()
        for item_shard in self.items:
            items, update = item_shard.publish(self.mirror, self._whole)
            self.mirror.apply(update)
            out.items += items.items
            out.item_vectors += items.item_vectors
            out.item_cold += items.item_cold
            out.expired_items += items.expired_items
        self._whole = False
        for user_shard in self.users:
            users = user_shard.publish(self.mirror)
            out.users += users.users
            out.user_vectors += users.user_vectors
            out.user_cold += users.user_cold
            out.expired_users += users.expired_users
        return out

    def item_vectors(self) -> tuple[list[str], Vectors]:
        """Every item with a vector of its own, and the vectors."""
        parts = [shard.tables["item"].items() for shard in self.items]
        ids = [i for keys, _ in parts for i in keys]
        matrix = np.concatenate([m for _, m in parts]) if ids else np.zeros((0, self.config.dim))
        return ids, matrix.astype(np.float32)

    def user_vector(self, user: str) -> Vector | None:
        """A user's own vector, else the mean of their first session's items (as published)."""
        shard = self.users[int(shard_of([user], self.shards)[0])]
        own = shard.table.vector(user)
        if own is not None:
            return own
        session = shard.sessions.items.get(user, [])
        cold, has = cold_user_vectors(
            self.config.dim, self.config.item_bias, self.mirror.lookup("item"), [session]
        )
        return cold[0] if has[0] else None
