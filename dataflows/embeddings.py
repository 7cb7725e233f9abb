"""Online embeddings: user and item vectors learned from every swipe, published every second.

The table is split by id over the flow's workers (Monolith's parameter servers,
`models.shards`): each worker holds one shard of the users and one of the items, creators
and tags, each shard the only writer of its rows.

read (a poll of one event topic-partition)
  ─▶ to_users     the poll as columns (the item's creator and tags from the catalog, each
                  event's weight from models.features.weights), erased users' events dropped,
                  split by a stable hash of the user; every shard gets the poll's newest second
  ─▶ users        user shards: admit their users (frequency filter), step each pair's user
                  half against the mirror; every `publish_interval_s` idle users expire and
                  changed vectors go out
  ─▶ to_items     each item shard's sightings and pair halves, by a stable hash of the id
  ─▶ items        item shards: once every user shard's part of a poll is in, admit their
                  ids and step each pair's item half against their own vectors; every
                  `publish_interval_s` idle ids expire, cold items get their creator's and
                  tags' mean, and changed vectors go out
  ─┬▶ to_mirrors  what an item shard learned (every `COPY_EVERY_S` and at each
   │              publication) to every shard key: the `mirror` step writes it into its
   │              process's copy of the item side, which the user shards read
   ├▶ to_topics      `item-vectors` / `user-vectors` (compacted; an expired id's tombstone)
   └▶ to_clickhouse  `item_embeddings` / `user_embeddings`, versioned (expired: deleted = 1)

One worker holds the whole table in one learner (`learn`, models.online.OnlineMF), where a
step reads both sides as they are, and learns its topics merged in one order, in batches
that do not depend on when each poll landed (models.ordering: a replay of the same stream
learns the same vectors); with more, a user's step reads the items as their shard last sent
them, a fraction of a second stale, and what each shard sees first follows the timing.

Crashes: Bytewax recovery snapshots each shard (tables, filter, reservoir, first sessions)
with the source offsets each epoch; a restart after kill -9 resumes from the last snapshot
and learns what came after it, once. The mirrors are not snapshotted: each item shard's
first copy after a start is everything it holds. A fresh start (no snapshot, e.g. a
new embedded broker, or a new count of shards) loads the vectors ClickHouse holds, so what
was learned is not lost with a memory-only broker either.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from dataflows.catalog import Catalog
from dataflows.embedding_inputs import swipes_of
from dataflows.embedding_keys import shard_keys
from dataflows.embedding_learners import ItemSide, Learner, UserBatch, UserSide
from dataflows.embedding_outputs import Versions, messages, table_rows
from dataflows.embedding_shared import Shared, shared
from dataflows.io.clickhouse_sinks import CommittedClickHouseSink, cluster_workers
from dataflows.io.kafka_sink import kafka_output
from dataflows.io.poll_source import KafkaPollSource, Polled
from dataflows.parse import stored_events
from models.items import ItemTable
from models.learning import Published
from models.mirror import MirrorUpdate
from models.shards import ToItems, split
from swipeloop import topics
from swipeloop.settings import Settings

log = logging.getLogger(__name__)


def build_flow(
    settings: Settings,
    stop: threading.Event | None = None,
    *,
    drain: bool = False,
    catalog: Catalog,
    shards: int | None = None,
) -> Dataflow:
    """The embeddings flow, wired to the settings' broker and ClickHouse.

    `drain` ends the flow once every partition is read to its end (benchmarks, tests);
    `catalog`: the item catalog, started and stopped by the caller;
    `shards` of each side (default: `embedding_shards`, else one per worker of the cluster).
    """
    if not catalog.wait_caught_up(60):
        log.warning("the item catalog is not caught up: early events learn without creator")
    items = ItemTable(catalog)
    count = shards or settings.embedding_shards or cluster_workers(settings)
    flow = Dataflow("embeddings")
    source = KafkaPollSource(
        settings,
        topics.EVENT_TOPICS,
        stop,
        drain,
        settings.embedding_batch_size,
        heartbeat_s=settings.embedding_hold_s / 4,
    )
    polls = op.input("read", flow, source)
    if count == 1:
        parts = source.list_parts()
        keyed = op.key_on("one_learner", polls, lambda _poll: "learner")
        learned = op.stateful(
            "learn", keyed, lambda resume: Learner(settings, catalog, items, resume, parts)
        )
        published = op.map("published", learned, lambda kv: kv[1])
    else:
        published = _sharded(polls, shared(settings, count, catalog), items)
    _outputs(settings, published)
    return flow


def _sharded(polls: Stream[Polled], context: Shared, items: ItemTable) -> Stream[Published]:
    """User shards, item shards and the mirrors between them; what both sides publish."""
    keys = shard_keys("shard", context.shards, cluster_workers(context.settings))

    def to_users(poll: Polled) -> list[tuple[str, UserBatch]]:
        erased = context.erased.users
        events = [ev for _, ev in stored_events(poll.records) if ev.user_id not in erased]
        if not events:
            return []
        swipes = swipes_of(events, items)
        newest = int(swipes.seconds.max())
        parts = split(swipes, context.shards)
        poll_id = f"{poll.key}@{poll.records[0][0]}"
        return [(keys[k], UserBatch(k, part, newest, poll_id)) for k, part in enumerate(parts)]

    # (user shard key, UserBatch)
    batches = op.flat_map("to_users", polls, to_users)
    # (user shard key, ToItems | Published)
    users = op.stateful("users", batches, lambda resume: UserSide(context, resume))

    def to_items(kv: tuple[str, ToItems | Published]) -> tuple[str, ToItems] | None:
        value = kv[1]
        return (keys[value.shard], value) if isinstance(value, ToItems) else None

    # (item shard key, ToItems) -> (item shard key, Published | MirrorUpdate)
    to_item_shards = op.filter_map("to_items", users, to_items)
    item_side = op.stateful("items", to_item_shards, lambda resume: ItemSide(context, resume))

    def to_mirrors(
        kv: tuple[str, Published | MirrorUpdate],
    ) -> list[tuple[str, tuple[str, MirrorUpdate]]]:
        update = kv[1]
        return [(key, (key, update)) for key in keys] if isinstance(update, MirrorUpdate) else []

    def into_mirror(_: None, via_update: tuple[str, MirrorUpdate]) -> tuple[None, list[Any]]:
        context.feed.deliver(*via_update)
        return None, []

    broadcast = op.flat_map("to_mirrors", item_side, to_mirrors)
    op.stateful_flat_map("mirror", broadcast, into_mirror)
    return op.merge(
        "published",
        op.filter_map("users_published", users, _published),
        op.filter_map("items_published", item_side, _published),
    )


def _published(kv: tuple[str, object]) -> Published | None:
    return kv[1] if isinstance(kv[1], Published) else None


def _outputs(settings: Settings, published: Stream[Published]) -> None:
    """Every publication to the vector topics and to ClickHouse, under one version."""
    versions = Versions()

    def stamped(p: Published) -> tuple[Published, int, datetime]:
        return p, versions.next(), datetime.now(UTC)

    changes = op.map("version", published, stamped)
    keyed_messages = op.flat_map("messages", changes, lambda c: messages(*c))
    for topic in (topics.ITEM_VECTORS, topics.USER_VECTORS):
        for_topic = op.filter_map(
            f"to_{topic}",
            keyed_messages,
            lambda tm, topic=topic: tm[1] if tm[0] == topic else None,  # type: ignore[misc]
        )
        op.output(f"produce_{topic}", for_topic, kafka_output(settings, topic))

    def rows(change: tuple[Published, int, datetime]) -> list[tuple[str, Any]]:
        return [(r.table, r) for r in table_rows(*change, settings.embedding_dim)]

    op.output(
        "to_clickhouse", op.flat_map("rows", changes, rows), CommittedClickHouseSink(settings)
    )


def flow() -> Dataflow:
    """Entry point for `python -m bytewax.run dataflows.embeddings:flow` (without recovery)."""
    settings = Settings.from_env()
    return build_flow(settings, catalog=Catalog.for_process(settings))
