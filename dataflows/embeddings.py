"""Online embeddings: user and item vectors learned from every swipe, published every second.

read (a poll of one event topic-partition)
  ─▶ learn      one learner (models.online.OnlineMF): the poll becomes columns (the item's
                creator and tags from the catalog, each event's weight from
                models.features.weights), ids pass the frequency filter, one SGD mini-batch
  ─▶ publish    every `publish_interval_s`: idle ids expired, changed vectors out
  ─┬▶ to_topics      `item-vectors` / `user-vectors` (compacted; an expired id's tombstone)
   └▶ to_clickhouse  `item_embeddings` / `user_embeddings`, versioned (expired: deleted = 1)

Crashes: Bytewax recovery snapshots the learner (tables, filter, reservoir, cold-start
state) with the source offsets each epoch; a restart after kill -9 resumes from the last
snapshot and learns what came after it, once. A fresh start (no snapshot, e.g. a new
embedded broker) loads the vectors ClickHouse holds, so what was learned is not lost with a
memory-only broker either.

One learner holds the whole table: a gradient step needs the user's and the item's vector
side by side. It learns ~40-60k events/s (numpy mini-batches); past that, the way out is
Monolith's: parameter servers (tables sharded by id) that the learners push gradients to.
"""

from __future__ import annotations

import atexit
import logging
import pickle
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
import msgspec
import numpy as np
import pyarrow as pa
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulLogic

from dataflows.catalog import Catalog
from dataflows.io.clickhouse_sinks import CommittedClickHouseSink
from dataflows.io.kafka_sink import Keyed, kafka_output, to_kafka
from dataflows.io.poll_source import KafkaPollSource, Polled
from dataflows.io.rows import Rows
from dataflows.parse import stored_events
from models.counting import seconds_of
from models.features.weights import affinity_weights, kind_codes
from models.items import ItemTable
from models.online import KINDS, LearnerConfig, OnlineMF, Published, Swipes
from swipeloop import topics
from swipeloop.clickhouse import connect, read_vectors, with_retry
from swipeloop.contracts import ItemVector, ReceivedEvent, UserVector
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
_IMPRESSION = int(kind_codes(["impression"])[0])
_encoder = msgspec.json.Encoder()


def learner_config(settings: Settings) -> LearnerConfig:
    return LearnerConfig(
        dim=settings.embedding_dim,
        lr=settings.embedding_lr,
        negatives=settings.embedding_negatives,
        uniform_negatives=settings.embedding_uniform_negatives,
        min_count=settings.embedding_min_count,
        ttl_s=settings.embedding_ttl_s,
        fp16=settings.embedding_fp16,
    )


def swipes_of(events: list[ReceivedEvent], items: ItemTable) -> Swipes:
    """A poll's events as the learner's columns (creator and tags from the catalog)."""
    n = len(events)
    item_ids = [e.item_id for e in events]
    with items.lock:
        code = items.codes(item_ids)
        duration = items.duration.view()[code]
        creator = items.creator.view()[code]
        tag_event, tag_codes = items.tags_of(code)
        creator_keys = items.creators.keys
        creators = [None if c < 0 else creator_keys[c] for c in creator.tolist()]
        tags = items.tags.keys[tag_codes].tolist()
    kinds = kind_codes([e.kind for e in events])
    watch_ms = np.fromiter((e.watch_ms for e in events), np.float64, n)
    return Swipes(
        users=[e.user_id for e in events],
        items=item_ids,
        creators=creators,
        weights=affinity_weights(kinds, watch_ms, duration),
        impression=kinds == _IMPRESSION,
        seconds=seconds_of((e.client_ts for e in events), n),
        tag_event=tag_event,
        tags=tags,
    )


class Learner(StatefulLogic[Polled, Published, bytes]):
    """Learns every poll; publishes what changed every `publish_interval_s`."""

    def __init__(
        self, settings: Settings, catalog: Catalog, items: ItemTable, resume: bytes | None
    ) -> None:
        self._catalog = catalog
        self._items = items
        self._catalog_at = 0  # how far into the catalog's change log uploads were announced
        if resume is not None:
            self.mf: OnlineMF = pickle.loads(resume)
        else:
            self.mf = OnlineMF(learner_config(settings))
            load_learned(self.mf, settings)
        self._every = timedelta(seconds=settings.publish_interval_s)
        self._next = datetime.now(UTC) + self._every
        self._client = connect(settings)
        self._erased = Erased()  # users who asked to be forgotten (swipeloop.erasure)
        self._forget_erased()

    def on_item(self, value: Polled) -> tuple[Iterable[Published], bool]:
        erased = self._erased.users
        events = [ev for _, ev in stored_events(value.records) if ev.user_id not in erased]
        if events:
            before = self.mf.updates
            self.mf.learn(swipes_of(events, self._items))
            EMBEDDING_EVENTS.inc(len(events))
            EMBEDDING_UPDATES.inc(self.mf.updates - before)
        return [], StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Published], bool]:
        self._next = datetime.now(UTC) + self._every
        return [self._publish()], StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Published], bool]:
        return [self._publish()], StatefulLogic.RETAIN

    def _forget_erased(self) -> None:
        self.mf.forget_users(
            with_retry("read of erasures", lambda: self._erased.refresh(self._client))
        )

    def _publish(self) -> Published:
        self._forget_erased()
        self._announce_uploads()
        published = self.mf.publish()
        EMBEDDING_EXPIRED.labels("item").inc(len(published.expired_items))
        EMBEDDING_EXPIRED.labels("user").inc(len(published.expired_users))
        for kind in KINDS:
            EMBEDDING_IDS.labels(kind).set(len(self.mf.tables[kind]))
        EMBEDDING_STATE_BYTES.set(self.mf.nbytes())
        return published

    def _announce_uploads(self) -> None:
        """Catalog items new to the learner get a cold vector before their first event;
        deleted ones lose theirs."""
        changed, self._catalog_at = self._catalog.changed(self._catalog_at)
        uploads, deleted = [], []
        for item_id in dict.fromkeys(changed):
            known = self._catalog.get(item_id)
            if known is None:
                continue
            if known.deleted:
                deleted.append(item_id)
            else:  # `announce` passes over items that have a vector already
                uploads.append((item_id, known.creator_id, tuple(known.tags)))
        self.mf.announce(uploads)
        self.mf.forget_items(deleted)

    def notify_at(self) -> datetime:
        return self._next

    def snapshot(self) -> bytes:
        return pickle.dumps(self.mf, protocol=pickle.HIGHEST_PROTOCOL)


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


class Versions:
    """Versions that only go up (milliseconds, one more than the last if the clock lags)."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, time.time_ns() // 1_000_000)
        return self._last


def messages(published: Published, version: int, now: datetime) -> list[tuple[str, Keyed]]:
    """(topic, keyed message) of every change: vectors, and tombstones for expired ids."""
    out: list[tuple[str, Keyed]] = []
    encode = _encoder.encode
    for item, vector, cold in zip(
        published.items, published.item_vectors, published.item_cold, strict=True
    ):
        body = ItemVector(
            item_id=item, version=version, updated_at=now, vector=vector.tolist(), cold=cold
        )
        out.append((topics.ITEM_VECTORS, to_kafka(item, encode(body))))
    for user, vector, cold in zip(
        published.users, published.user_vectors, published.user_cold, strict=True
    ):
        body_u = UserVector(
            user_id=user, version=version, updated_at=now, vector=vector.tolist(), cold=cold
        )
        out.append((topics.USER_VECTORS, to_kafka(user, encode(body_u))))
    out.extend((topics.ITEM_VECTORS, to_kafka(i, None)) for i in published.expired_items)
    out.extend((topics.USER_VECTORS, to_kafka(u, None)) for u in published.expired_users)
    return out


def vector_rows(
    table: str,
    key_column: str,
    ids: list[str],
    vectors: list[Any],
    cold: list[bool],
    expired: list[str],
    version: int,
    now: datetime,
    dim: int,
) -> Rows | None:
    """One Arrow table of versioned vectors (expired ids: deleted, empty vector)."""
    if not ids and not expired:
        return None
    flat = np.concatenate([*vectors, np.zeros(0, np.float32)]).astype(np.float32)
    sizes = [dim] * len(ids) + [0] * len(expired)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    n = len(ids) + len(expired)
    arrow = pa.table(
        {
            key_column: pa.array([*ids, *expired], pa.string()),
            "version": pa.array(np.full(n, version, np.uint64)),
            "updated_at": pa.array([now] * n, pa.timestamp("ms", tz="UTC")),
            "vector": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)),
            "cold": pa.array(np.r_[np.asarray(cold, bool), np.zeros(len(expired), bool)]).cast(
                pa.uint8()
            ),
            "deleted": pa.array(np.r_[np.zeros(len(ids), bool), np.ones(len(expired), bool)]).cast(
                pa.uint8()
            ),
        }
    )
    return Rows(table, arrow.column_names, [], arrow=arrow)


def build_flow(
    settings: Settings,
    stop: threading.Event | None = None,
    *,
    drain: bool = False,
    catalog: Catalog | None = None,
) -> Dataflow:
    """The embeddings flow, wired to the settings' broker and ClickHouse.

    `drain` ends the flow once every partition is read to its end (benchmarks, tests).
    """
    if catalog is None:
        catalog = Catalog(settings).start()
        atexit.register(catalog.stop)
    if not catalog.wait_caught_up(60):
        log.warning("the item catalog is not caught up: early events learn without creator")
    items = ItemTable(catalog)
    flow = Dataflow("embeddings")
    source = KafkaPollSource(
        settings, topics.EVENT_TOPICS, stop, drain, settings.embedding_batch_size
    )
    polls = op.input("read", flow, source)
    keyed = op.key_on("one_learner", polls, lambda _poll: "learner")
    published = op.stateful(
        "learn", keyed, lambda resume: Learner(settings, catalog, items, resume)
    )
    versions = Versions()

    def stamped(kv: tuple[str, Published]) -> tuple[Published, int, datetime]:
        return kv[1], versions.next(), datetime.now(UTC)

    changes = op.map("version", published, stamped)
    keyed_messages = op.flat_map("messages", changes, lambda c: messages(*c))
    for topic in (topics.ITEM_VECTORS, topics.USER_VECTORS):
        for_topic = op.filter_map(
            f"to_{topic}",
            keyed_messages,
            lambda tm, topic=topic: tm[1] if tm[0] == topic else None,  # type: ignore[misc]
        )
        op.output(f"produce_{topic}", for_topic, kafka_output(settings, topic))

    def rows(change: tuple[Published, int, datetime]) -> list[tuple[str, Rows]]:
        p, version, now = change
        dim = settings.embedding_dim
        out = [
            vector_rows(
                "item_embeddings",
                "item_id",
                p.items,
                p.item_vectors,
                p.item_cold,
                p.expired_items,
                version,
                now,
                dim,
            ),
            vector_rows(
                "user_embeddings",
                "user_id",
                p.users,
                p.user_vectors,
                p.user_cold,
                p.expired_users,
                version,
                now,
                dim,
            ),
        ]
        return [(r.table, r) for r in out if r is not None]

    op.output(
        "to_clickhouse", op.flat_map("rows", changes, rows), CommittedClickHouseSink(settings)
    )
    return flow


def flow() -> Dataflow:
    """Entry point for `python -m bytewax.run dataflows.embeddings:flow` (without recovery)."""
    return build_flow(Settings.from_env())
