"""The stateful steps of the embeddings flow: one learner when the table is one shard, or a
user shard and an item shard per worker (`models.shards`), each publishing every
`publish_interval_s`."""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from bytewax.operators import StatefulLogic

from dataflows.catalog import Catalog
from dataflows.embedding_inputs import event_order, swipes_of, uploads
from dataflows.embedding_shared import Shared, learned, learner_config
from dataflows.io.poll_source import Polled
from dataflows.parse import stored_events
from models.item_shard import ItemShard
from models.items import ItemTable
from models.learning import KINDS, Published, Swipes
from models.mirror import MirrorUpdate
from models.online import OnlineMF
from models.ordering import InOrder
from models.shards import ToItems, merge, shard_of
from models.user_shard import UserShard
from swipeloop.clickhouse import connect, read_vectors, with_retry
from swipeloop.contracts import ReceivedEvent
from swipeloop.erasure import Erased
from swipeloop.metrics import (
    EMBEDDING_EVENTS,
    EMBEDDING_EXPIRED,
    EMBEDDING_IDS,
    EMBEDDING_STATE_BYTES,
    EMBEDDING_UPDATES,
)
from swipeloop.settings import Settings

log = logging.getLogger(__name__)
# An item shard sends the mirrors what it learned after a batch, if they have not heard from
# it for this long (and with every publication): the user side's half of a step reads items
# as they were that long ago, not a publication ago (a second), which in a shard's first
# second is nothing at all. Every process applies every copy: sooner costs more.
COPY_EVERY_S = 0.25


class Learner(StatefulLogic[Polled, Published, bytes]):
    """The whole table in one learner (one shard: both halves of a step read the other's
    current vector); learns the polls merged by receipt time and cut into batches
    (`models.ordering.InOrder`), publishes what changed every `publish_interval_s`."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        items: ItemTable,
        resume: bytes | None,
        sources: list[str],
    ) -> None:
        self._catalog = catalog
        self._items = items
        self._catalog_at = 0  # how far into the catalog's change log uploads were announced
        restored = pickle.loads(resume) if resume is not None else None
        self.mf: OnlineMF
        self.order: InOrder[ReceivedEvent]
        if isinstance(restored, tuple):  # (tables, what the merge held)
            self.mf, self.order = restored
            self.order.restart(sources)
        else:
            if isinstance(restored, OnlineMF):  # a snapshot from before the merge
                self.mf = restored
            else:
                self.mf = OnlineMF(learner_config(settings))
                load_learned(self.mf, settings)
            self.order = InOrder(
                sources,
                event_order,
                settings.embedding_batch_size,
                settings.embedding_hold_s,
                settings.embedding_batch_wait_s,
            )
        self._every = timedelta(seconds=settings.publish_interval_s)
        self._next = datetime.now(UTC) + self._every
        self._client = connect(settings)
        self._erased = Erased()  # users who asked to be forgotten (swipeloop.erasure)
        self._forget_erased()

    def on_item(self, value: Polled) -> tuple[Iterable[Published], bool]:
        self.order.add(value.key, [ev for _, ev in stored_events(value.records)], value.quiet_since)
        self._learn(self.order.take(time.time()))
        return [], StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Published], bool]:
        self._next = datetime.now(UTC) + self._every
        self._learn(self.order.take(time.time()))
        return [self._publish()], StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Published], bool]:
        self._learn(self.order.drain())  # every partition read to its end
        return [self._publish()], StatefulLogic.RETAIN

    def _learn(self, batches: list[list[ReceivedEvent]]) -> None:
        """The merged batches, in order (models.ordering), less erased users' events."""
        erased = self._erased.users
        for batch in batches:
            events = [ev for ev in batch if ev.user_id not in erased]
            if events:
                before = self.mf.updates
                self.mf.learn(swipes_of(events, self._items))
                EMBEDDING_EVENTS.inc(len(events))
                EMBEDDING_UPDATES.inc(self.mf.updates - before)

    def _forget_erased(self) -> None:
        self.mf.forget_users(
            with_retry("read of erasures", lambda: self._erased.refresh(self._client))
        )

    def _publish(self) -> Published:
        self._forget_erased()
        new, deleted, self._catalog_at = uploads(self._catalog, self._catalog_at)
        self.mf.announce(new)
        self.mf.forget_items(deleted)
        published = self.mf.publish()
        EMBEDDING_EXPIRED.labels("item").inc(len(published.expired_items))
        EMBEDDING_EXPIRED.labels("user").inc(len(published.expired_users))
        for kind in KINDS:
            EMBEDDING_IDS.labels(kind).set(len(self.mf.tables[kind]))
        EMBEDDING_STATE_BYTES.set(self.mf.nbytes())
        return published

    def notify_at(self) -> datetime:
        return self._next

    def snapshot(self) -> bytes:
        """The tables and what the merge holds that was not learned yet (its sources'
        offsets are past it)."""
        return pickle.dumps((self.mf, self.order), protocol=pickle.HIGHEST_PROTOCOL)


def load_learned(mf: OnlineMF, settings: Settings) -> None:
    """Start from the own (not cold) vectors ClickHouse holds: a new embedded broker forgets
    its offsets and this flow's snapshots with them, not what was learned."""
    client = connect(settings)
    now_s = int(time.time())
    for kind, table in (("item", "item_embeddings"), ("user", "user_embeddings")):
        ids, matrix = read_vectors(client, settings.embedding_dim, table, own_only=True)
        if ids:
            mf.tables[kind].insert(ids, matrix, now_s)
            mf.tables[kind].take_changed()  # already published
            log.info("embeddings: %d %s vectors loaded from ClickHouse", len(ids), kind)


@dataclass
class UserBatch:
    """One user shard's part of a poll (every shard gets one), and the poll's newest event
    second (every shard's clock, so ids of a shard that sees no events still expire)."""

    shard: int
    swipes: Swipes
    newest_s: int | None
    poll: str  # which poll: its topic-partition and first offset


Shard = TypeVar("Shard", UserShard, ItemShard)


def _restored(shard: object, kind: type[Shard], shards: int) -> Shard | None:
    """A shard as snapshotted; none if there is none, or it was made for another count of
    shards (its ids are not this shard's any more: it starts over from ClickHouse)."""
    if not isinstance(shard, kind):
        return None
    if shard.shards != shards:
        log.warning("embeddings: a snapshot of 1 shard of %d dropped: now %d", shard.shards, shards)
        return None
    return shard


class _Publishing:
    """A shard's publication timer: every `publish_interval_s`, and at the end."""

    def __init__(self, settings: Settings) -> None:
        self._every = timedelta(seconds=settings.publish_interval_s)
        self._next = datetime.now(UTC) + self._every

    def notify_at(self) -> datetime:
        return self._next

    def due(self) -> None:
        self._next = datetime.now(UTC) + self._every


class UserSide(StatefulLogic[UserBatch, ToItems | Published, bytes]):
    """A user shard: learns its part of every poll, sends the item shards theirs, and
    publishes its users."""

    def __init__(self, shared: Shared, resume: bytes | None) -> None:
        self._shared = shared
        self.shard = _restored(resume and pickle.loads(resume), UserShard, shared.shards)
        self._timer = _Publishing(shared.settings)
        self._erased_at = 0  # how many of the process's erased users this shard has forgotten

    def on_item(self, value: UserBatch) -> tuple[Iterable[ToItems | Published], bool]:
        if self.shard is None:  # built by its first batch, which names it
            s = self._shared
            self.shard = UserShard(s.config, value.shard, s.shards)
            ids, matrix = learned(s.settings, "user_embeddings", value.shard, s.shards)
            self.shard.load(ids, matrix, int(time.time()))
        out = self.shard.learn(value.swipes, self._shared.feed.mirror, value.newest_s)
        for part in out:
            part.poll = value.poll
        EMBEDDING_EVENTS.inc(len(value.swipes.users))
        return out, StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[ToItems | Published], bool]:
        self._timer.due()
        return self._publish(), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[ToItems | Published], bool]:
        return self._publish(), StatefulLogic.RETAIN

    def _publish(self) -> list[ToItems | Published]:
        if self.shard is None:
            return []
        erased = self._shared.erased
        erased.refresh()
        new, self._erased_at = erased.since(self._erased_at)
        self.shard.forget_users(new)
        published = self.shard.publish(self._shared.feed.mirror)
        EMBEDDING_EXPIRED.labels("user").inc(len(published.expired_users))
        ids = {"user": len(self.shard.table)}
        self._shared.tally.report(f"user-{self.shard.shard}", ids, self.shard.nbytes())
        return [published]

    def notify_at(self) -> datetime:
        return self._timer.notify_at()

    def snapshot(self) -> bytes:
        return pickle.dumps(self.shard, protocol=pickle.HIGHEST_PROTOCOL)


class ItemSide(StatefulLogic[ToItems, Published | MirrorUpdate, bytes]):
    """An item shard: learns each poll once every user shard has sent its part of it
    (`models.shards.merge`), and publishes its items to the flow's outputs and its items,
    creators and tags to every mirror."""

    def __init__(self, shared: Shared, resume: bytes | None) -> None:
        self._shared = shared
        held = None if resume is None else pickle.loads(resume)
        shard, self._parts = held if isinstance(held, tuple) else (held, {})
        self.shard = _restored(shard, ItemShard, shared.shards)
        self._timer = _Publishing(shared.settings)
        self._catalog_at = 0  # how far into the catalog's change log uploads were announced
        self._whole = True  # the mirrors have nothing of this shard yet (a start)
        self._copied_at = 0.0  # (monotonic) when the mirrors last heard from this shard

    def on_item(self, value: ToItems) -> tuple[Iterable[Published | MirrorUpdate], bool]:
        if self.shard is None:  # built by its first batch, which names it
            s = self._shared
            self.shard = ItemShard(s.config, value.shard, s.shards)
            ids, matrix = learned(s.settings, "item_embeddings", value.shard, s.shards)
            self.shard.load(ids, matrix, int(time.time()))
        parts = self._parts.setdefault(value.poll, [])
        parts.append(value)
        if len(parts) < self._shared.shards:
            return [], StatefulLogic.RETAIN
        del self._parts[value.poll]
        before = self.shard.updates
        self.shard.learn(merge(parts), self._shared.feed.mirror)
        EMBEDDING_UPDATES.inc(self.shard.updates - before)
        if time.monotonic() - self._copied_at < COPY_EVERY_S:
            return [], StatefulLogic.RETAIN
        return [self._copied()], StatefulLogic.RETAIN

    def _copied(self) -> MirrorUpdate:
        """What the mirrors have not heard of yet (everything, after a start)."""
        assert self.shard is not None
        self._copied_at = time.monotonic()
        update = self.shard.copied(self._whole)
        self._whole = False
        return update

    def on_notify(self) -> tuple[Iterable[Published | MirrorUpdate], bool]:
        self._timer.due()
        return self._publish(), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Published | MirrorUpdate], bool]:
        return self._publish(), StatefulLogic.RETAIN

    def _publish(self) -> list[Published | MirrorUpdate]:
        shard = self.shard
        if shard is None:
            return []
        new, deleted, self._catalog_at = uploads(self._shared.catalog, self._catalog_at)
        mine = shard_of([item for item, _, _ in new], shard.shards) == shard.shard
        shard.announce([upload for upload, own in zip(new, mine.tolist(), strict=True) if own])
        shard.forget_items(deleted)  # (ids of other shards: not held here, nothing to do)
        published, update = shard.publish(self._shared.feed.mirror, self._whole)
        self._whole, self._copied_at = False, time.monotonic()
        EMBEDDING_EXPIRED.labels("item").inc(len(published.expired_items))
        self._shared.tally.report(f"item-{shard.shard}", shard.live_ids(), shard.nbytes())
        return [published, update]

    def notify_at(self) -> datetime:
        return self._timer.notify_at()

    def snapshot(self) -> bytes:
        # (parts of a poll arrive in the poll's epoch, so at a snapshot there are none:
        # kept all the same, as what the shard has been sent)
        return pickle.dumps((self.shard, self._parts), protocol=pickle.HIGHEST_PROTOCOL)
