"""The topic follower: one consumer thread that keeps a serving state's caches fresh.

Compacted topics (catalog, features, vectors) are read from the start; user events and
impressions from `api.bootstrap.REPLAY_S` before bootstrap, since what came earlier was read
from ClickHouse. Each message goes to the state's applier for its topic; the vector updates
of one poll are applied together.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)

from api.state import ServingState, Shown
from swipeloop import topics
from swipeloop.contracts import Item, ItemFeatures, ItemVector, ReceivedEvent, UserVector
from swipeloop.kafka import client_config
from swipeloop.metrics import FEATURE_LAG, VECTOR_LAG
from swipeloop.settings import Settings

log = logging.getLogger(__name__)
FOLLOW_FETCH_BYTES = 1 << 20  # what a follower's fetch waits for (or `follow_wait_ms`)
USER_TOPICS = frozenset({topics.EVENTS_ACTIONS, topics.EVENTS_CONTEXT, topics.IMPRESSIONS})


@dataclass
class Vectors:
    """Vector updates of one consumer poll, applied together."""

    items: list[ItemVector] = field(default_factory=list)
    removed_items: list[str] = field(default_factory=list)
    users: list[UserVector] = field(default_factory=list)
    removed_users: list[str] = field(default_factory=list)


class Feeder:
    """One consumer thread that keeps the caches fresh: compacted topics from the start,
    user events and impressions from a little before bootstrap (`api.bootstrap.REPLAY_S`;
    what came earlier was read from ClickHouse)."""

    def __init__(self, state: ServingState, settings: Settings) -> None:
        assert settings.kafka_bootstrap, "the feeder needs a broker address"
        self._state = state
        self._settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {
            topics.ITEMS: msgspec.json.Decoder(Item),
            topics.ITEM_FEATURES: msgspec.json.Decoder(ItemFeatures),
            topics.ITEM_VECTORS: msgspec.json.Decoder(ItemVector),
            topics.USER_VECTORS: msgspec.json.Decoder(UserVector),
            topics.EVENTS_ACTIONS: msgspec.json.Decoder(ReceivedEvent),
            topics.EVENTS_CONTEXT: msgspec.json.Decoder(ReceivedEvent),
            topics.IMPRESSIONS: msgspec.json.Decoder(Shown),
        }

    def start(self) -> None:
        """Assign partitions and start consuming."""
        self._thread.start()

    def stop(self) -> None:
        """Stop consuming and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _assignments(self, consumer: Consumer) -> list[TopicPartition]:
        """Compacted topics from the start; user events and impressions from `REPLAY_S`
        before bootstrap, which may not have been in ClickHouse yet when it was read (an
        event applied twice changes nothing: seen, blocks and positives are sets)."""
        meta = consumer.list_topics(timeout=10)
        parts, recent = [], []
        for topic in self._decoders:
            for p in meta.topics[topic].partitions:
                if topic in USER_TOPICS:
                    recent.append(TopicPartition(topic, p, self._state.replay_from_ms))
                else:
                    parts.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        if recent:
            try:
                found = consumer.offsets_for_times(recent, timeout=10)
            except KafkaException:
                log.exception("cannot look up offsets by time; following from now")
                found = []
            for tp in found or [TopicPartition(t.topic, t.partition, OFFSET_END) for t in recent]:
                offset = tp.offset if tp.offset >= 0 else OFFSET_END
                parts.append(TopicPartition(tp.topic, tp.partition, offset))
        return parts

    def _run(self) -> None:
        consumer = Consumer(
            client_config(
                self._settings.kafka_bootstrap,
                **{
                    "group.id": "swipeloop-api",
                    "enable.auto.commit": False,
                    # a fetch returns when FOLLOW_FETCH_BYTES are there or after the wait:
                    # at 100 feeds/s, one answer per 20 ms cost the embedded broker 3.4 ms
                    # of CPU per feed more than one per 200 ms (bench/RESULTS.md)
                    "fetch.wait.max.ms": self._settings.follow_wait_ms,
                    "fetch.min.bytes": FOLLOW_FETCH_BYTES,
                },
            )
        )
        consumer.assign(self._assignments(consumer))
        try:
            while not self._stop.is_set():
                batch = consumer.consume(1000, 0.02)  # returns at 1000 or the timeout
                try:
                    self._apply_batch(batch)
                except Exception:  # a bug must not stop the caches from following the topics
                    log.exception("the feeder failed to apply a batch of %d messages", len(batch))
        finally:
            consumer.close()

    def _apply_batch(self, batch: list[Message]) -> None:
        vectors = Vectors()
        failed = 0
        for msg in batch:
            if msg.error() is not None:
                continue
            try:
                self._apply(msg.topic() or "", msg.key(), msg.value(), vectors)
            except Exception:  # one message that trips a bug costs itself, not its batch
                if not failed:
                    log.exception("the feeder failed to apply a message from %s", msg.topic())
                failed += 1
        if failed > 1:
            log.error("the feeder failed to apply %d messages of a batch of %d", failed, len(batch))
        if vectors.items or vectors.removed_items:
            self._state.apply_vectors(vectors.items, vectors.removed_items)
        if vectors.users or vectors.removed_users:
            self._state.apply_user_vectors(vectors.users, vectors.removed_users)

    def _apply(self, topic: str, key: bytes | None, value: bytes | None, vectors: Vectors) -> None:
        if value is None:  # a tombstone: the id expired or was erased
            name = (key or b"").decode()
            if topic == topics.ITEM_VECTORS:
                vectors.removed_items.append(name)
            elif topic == topics.USER_VECTORS:
                vectors.removed_users.append(name)
            return
        try:
            decoded = self._decoders[topic].decode(value)
        except msgspec.DecodeError:
            return  # the ingest flow dead-letters malformed messages
        if isinstance(decoded, Shown):
            self._state.apply_impression(decoded)
        elif isinstance(decoded, UserVector):
            VECTOR_LAG.labels("user").observe(time.time() - decoded.updated_at.timestamp())
            vectors.users.append(decoded)
        elif isinstance(decoded, ItemVector):
            VECTOR_LAG.labels("item").observe(time.time() - decoded.updated_at.timestamp())
            vectors.items.append(decoded)
        elif isinstance(decoded, ItemFeatures):
            FEATURE_LAG.observe(time.time() - decoded.as_of.timestamp())
            self._state.apply_features(decoded)
        elif isinstance(decoded, Item):
            self._state.apply_item(decoded)
        else:
            self._state.apply_event(decoded)
