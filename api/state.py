"""What a feed request reads: caches bootstrapped from ClickHouse, kept fresh from topics."""

from __future__ import annotations

import heapq
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import msgspec
import numpy as np
from clickhouse_connect.driver.client import Client
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from api.index import VectorIndex
from models.embeddings import Vector, mean_vector, normalized, normalized_rows
from models.features import (
    COUNTERS,
    FRESH_HOURS,
    Session,
    advance_session,
    engagement_weight,
    exposure_room,
    packed_counts,
    trending_score,
    window,
)
from swipeloop import topics
from swipeloop.clickhouse import read_vectors
from swipeloop.contracts import (
    Impression,
    Item,
    ItemFeatures,
    ItemVector,
    ReceivedEvent,
    UserVector,
)
from swipeloop.kafka import client_config
from swipeloop.settings import Settings

log = logging.getLogger(__name__)
RECENT_POSITIVES = 20
FRESH_POOL = 1_000  # new uploads with room at their exposure stage, kept ready per second
IMPRESSIONS_REPLAY_S = 300  # a restarted replica re-reads this much of `impressions`
SEEN_DAYS = 30
T = TypeVar("T")


@dataclass
class UserState:
    """What the API remembers of one user: what was shown, liked, blocked."""

    user_id: str = ""
    seen: set[str] = field(default_factory=set)
    positives: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_POSITIVES))
    blocked_creators: set[str] = field(default_factory=set)
    followed: set[str] = field(default_factory=set)  # creators
    hidden_items: set[str] = field(default_factory=set)
    session: Session = field(default_factory=Session)
    loaded: bool = False


class ServingState:
    """Catalog, windowed features, item vectors and users, shared by all requests."""

    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.catalog: dict[str, Item] = {}
        self.deleted: set[str] = set()  # items taken down
        self.creator_items: dict[str, list[str]] = {}  # creator -> items, in upload order
        self.features: dict[str, ItemFeatures] = {}
        self.vectors: dict[str, Vector] = {}  # items, unit length
        self.index = VectorIndex(settings.embedding_dim)
        self.user_vectors: dict[str, Vector] = {}  # learned online (own or cold), unit length
        self.users: dict[str, UserState] = {}
        self._client = client
        self._client_lock = threading.Lock()
        self._lists: dict[str, tuple[tuple[int, int], Any]] = {}  # name -> (key, value)
        self._compute_lock = threading.Lock()
        self._catalog_version = 0

    # ---- bootstrap from ClickHouse (what survives a restart of a memory-only broker) ----

    def bootstrap(self) -> None:
        """Fill the caches from ClickHouse once at start."""
        with self._client_lock:
            items = self._client.query(
                "SELECT item_id, creator_id, duration_ms, tags, sound_id, created_at, deleted "
                "FROM items FINAL"
            ).result_rows
            feats = self._client.query(
                "SELECT item_id, window_s, argMax(tuple(window_end, "
                + ", ".join(COUNTERS)
                + "), window_end) FROM item_features FINAL "
                "WHERE window_end > now() - INTERVAL 1 DAY GROUP BY item_id, window_s"
            ).result_rows
            ids, matrix = read_vectors(self._client, self.settings.embedding_dim)
            users, user_matrix = read_vectors(
                self._client, self.settings.embedding_dim, "user_embeddings"
            )
        for item_id, creator, duration, tags, sound, created, deleted in items:
            if deleted:
                self.deleted.add(item_id)
                continue
            self.catalog[item_id] = Item(
                item_id=item_id,
                creator_id=creator,
                duration_ms=duration,
                tags=list(tags),
                sound_id=sound or None,
                created_at=created.replace(tzinfo=UTC),
            )
        windows: dict[str, list[tuple[int, datetime, list[float]]]] = {}
        for item_id, window_s, (end, *counts) in feats:
            windows.setdefault(item_id, []).append((window_s, end.replace(tzinfo=UTC), counts))
        for item_id, closed in windows.items():
            self.features[item_id] = ItemFeatures(
                item_id=item_id,
                as_of=max(end for _, end, _ in closed),
                window_s=[length for length, _, _ in closed],
                window_end=[end for _, end, _ in closed],
                counts=packed_counts(np.array([counts for _, _, counts in closed])),
            )
        live = [k for k, item_id in enumerate(ids) if item_id not in self.deleted]
        ids, unit = [ids[k] for k in live], normalized_rows(matrix[live])
        self.vectors.update(zip(ids, unit, strict=True))
        self.index.bulk_load(ids, unit)  # exact at once; a large index builds its IVF behind
        self.user_vectors.update(zip(users, normalized_rows(user_matrix), strict=True))
        log.info(
            "bootstrapped %d items, %d feature rows, %d item and %d user vectors",
            len(self.catalog),
            len(self.features),
            len(self.vectors),
            len(self.user_vectors),
        )

    def _apply_vectors(self, vectors: dict[str, Vector], removed: list[str]) -> None:
        """Vectors into the cache and the index (a taken-down item's, still in flight, never
        brings it back); removed ones out of both."""
        unit = {i: normalized(v) for i, v in vectors.items() if i not in self.deleted}
        self.vectors.update(unit)
        self.index.upsert(unit)
        if removed:
            for item_id in removed:
                self.vectors.pop(item_id, None)
            self.index.remove(removed)

    # ---- stream updates ----

    def apply_item(self, item: Item) -> None:
        """A new or changed catalog entry; a deleted one leaves the catalog and the index."""
        if item.deleted:
            self.deleted.add(item.item_id)
            self.catalog.pop(item.item_id, None)
            self.features.pop(item.item_id, None)
            self._apply_vectors({}, [item.item_id])
        else:
            self.deleted.discard(item.item_id)
            if item.item_id not in self.catalog:
                self.creator_items.setdefault(item.creator_id, []).append(item.item_id)
            self.catalog[item.item_id] = item
        self._catalog_version += 1

    def apply_features(self, f: ItemFeatures) -> None:
        """Keep the newest window of each item."""
        old = self.features.get(f.item_id)
        if old is None or old.as_of <= f.as_of:
            self.features[f.item_id] = f

    def apply_vectors(self, vectors: list[ItemVector], removed: list[str] | None = None) -> None:
        """New item vectors go straight into the index; expired items leave it."""
        self._apply_vectors(
            {v.item_id: np.asarray(v.vector, dtype=np.float32) for v in vectors}, removed or []
        )

    def apply_user_vectors(self, vectors: list[UserVector], removed: list[str]) -> None:
        """Users' vectors as the embeddings flow learns them; expired users are dropped."""
        for v in vectors:
            self.user_vectors[v.user_id] = normalized(np.asarray(v.vector, dtype=np.float32))
        for user_id in removed:
            self.user_vectors.pop(user_id, None)

    def apply_impression(self, imp: Impression) -> None:
        """An item shown by any replica: a user this replica holds never sees it again
        (users it does not hold load their seen set from ClickHouse when they come)."""
        user = self.users.get(imp.user_id)
        if user is not None:
            user.seen.add(imp.item_id)

    def apply_event(self, ev: ReceivedEvent) -> None:
        """A user's own signals: positives shape their vector, negatives filter their feed."""
        user = self.users.get(ev.user_id) or self.users.setdefault(
            ev.user_id, UserState(ev.user_id)
        )
        item = self.catalog.get(ev.item_id)
        user.session = advance_session(
            user.session,
            ev.session_id,
            ev.client_ts.timestamp(),
            ev.kind,
            ev.watch_ms,
            item.duration_ms if item else None,
        )
        if ev.kind == "impression":
            user.seen.add(ev.item_id)
        elif ev.kind == "block":
            if item is not None:
                user.blocked_creators.add(item.creator_id)
        elif ev.kind == "follow":
            if item is not None:
                user.followed.add(item.creator_id)
        elif ev.kind == "not_interested":
            user.hidden_items.add(ev.item_id)
        elif engagement_weight(ev.kind, ev.watch_ms) > 0 and ev.item_id not in user.positives:
            user.positives.append(ev.item_id)

    # ---- reads for a feed ----

    def user(self, user_id: str) -> UserState:
        """A user's state, loaded from ClickHouse the first time this replica sees them."""
        user = self.users.get(user_id)
        if user is None:
            user = self.users.setdefault(user_id, UserState(user_id))
        if not user.loaded:
            self._load_user(user_id, user)
        return user

    def _load_user(self, user_id: str, user: UserState) -> None:
        since = datetime.now(UTC) - timedelta(days=SEEN_DAYS)
        params = {"u": user_id, "since": since}
        with self._client_lock:
            seen = self._client.query(
                "SELECT DISTINCT item_id FROM impressions WHERE user_id = {u:String} "
                "AND served_at >= {since:DateTime64(3)}",
                parameters=params,
            ).result_rows
            events = self._client.query(
                "SELECT item_id, kind, watch_ms FROM events WHERE user_id = {u:String} "
                "AND client_ts >= {since:DateTime64(3)} AND kind != 'impression' "
                "ORDER BY client_ts",
                parameters=params,
            ).result_rows
        user.seen.update(r[0] for r in seen)
        for item_id, kind, watch_ms in events:
            self.apply_event(
                ReceivedEvent(
                    event_id=_NIL,
                    user_id=user_id,
                    item_id=item_id,
                    kind=kind,
                    watch_ms=watch_ms,
                    client_ts=since,
                    session_id="-",
                    seq=0,
                    received_at=since,
                )
            )
        user.loaded = True

    def user_vector(self, user: UserState) -> Vector | None:
        """The user's taste: the vector the embeddings flow learned for them (or, for a new
        user, the mean of their first session's items); before the flow has published one,
        the mean of the vectors of the items they recently engaged with."""
        learned = self.user_vectors.get(user.user_id)
        if learned is not None:
            return learned
        # list(): the feeder thread appends while requests read (a copy is atomic under the GIL)
        return self.taste(list(user.positives))

    def taste(self, items: list[str]) -> Vector | None:
        """A user vector made of items: the mean of their vectors, with the bias coordinate
        at 1 as in every learned user vector (None: none of them has a vector)."""
        mean = mean_vector([self.vectors[i] for i in items if i in self.vectors])
        if mean is None:
            return None
        mean[-1] = 1.0
        return normalized(mean)

    def trending_scores(self) -> dict[str, float]:
        """Every item's trending score (items with live windows; recomputed once a second,
        over a copy: the feeder thread keeps inserting while requests read)."""
        now = datetime.now(UTC)
        return self._cached(
            "trending_scores",
            0,
            int(time.monotonic()),
            lambda: {i: trending_score(f, now) for i, f in list(self.features.items())},
        )

    def trending(self, limit: int) -> list[str]:
        """Items by windowed engagement, best first (recomputed at most once a second)."""
        scores = self.trending_scores()
        return self._cached(
            "trending",
            limit,
            int(time.monotonic()),
            lambda: [
                i
                for i in heapq.nlargest(limit, scores, key=scores.__getitem__)
                if i in self.catalog
            ],
        )

    def fresh(self, limit: int) -> list[str]:
        """The newest uploads first (recomputed only when the catalog changed)."""
        return self._cached(
            "fresh",
            limit,
            self._catalog_version,
            lambda: [
                i
                for _, i in heapq.nlargest(
                    limit, ((it.created_at, i) for i, it in list(self.catalog.items()))
                )
            ],
        )

    def fresh_pool(self, limit: int = FRESH_POOL) -> list[str]:
        """New uploads (`FRESH_HOURS`) that still have room at their exposure stage, the
        least shown first: every new video gets its small first audience, and only the ones
        that audience liked go on to a larger one (`models.features.exposure_stage`)."""
        since = datetime.now(UTC) - timedelta(hours=FRESH_HOURS)
        newest = self.fresh(limit * 4)  # outside: the cache's lock is not reentrant

        def pool() -> list[str]:
            room = []
            for item_id in newest:
                item = self.catalog.get(item_id)
                if item is None or item.created_at < since:
                    continue
                features = self.features.get(item_id)
                if exposure_room(features) > 0:
                    room.append((window(features, 86400).impressions, item_id))
            return [i for _, i in sorted(room)[:limit]]

        return self._cached("fresh_pool", limit, int(time.monotonic()), pool)

    def by_creators(self, creators: set[str]) -> Iterator[str]:
        """The items of these creators, newest uploads first."""
        for creator in list(creators):
            yield from reversed(self.creator_items.get(creator, []))

    def catalog_order(self) -> Iterator[str]:
        """Every item: trending first, then the rest of the catalog (the last resort)."""
        yield from self.trending(len(self.features))
        yield from list(self.catalog)

    def _cached(self, name: str, limit: int, key: int, compute: Callable[[], T]) -> T:
        """One thread recomputes a stale value while the others keep serving the previous one."""
        hit = self._lists.get(name)
        if hit is not None and hit[0] == (key, limit):
            return cast(T, hit[1])
        # Without a previous value, wait for the one being computed; with one, serve it stale.
        if not self._compute_lock.acquire(blocking=hit is None):
            assert hit is not None
            return cast(T, hit[1])
        try:
            value = compute()
            self._lists[name] = ((key, limit), value)
        finally:
            self._compute_lock.release()
        return value


_NIL = uuid.UUID(int=0)


@dataclass
class Vectors:
    """Vector updates of one consumer poll, applied together."""

    items: list[ItemVector] = field(default_factory=list)
    removed_items: list[str] = field(default_factory=list)
    users: list[UserVector] = field(default_factory=list)
    removed_users: list[str] = field(default_factory=list)


class Feeder:
    """One consumer thread that keeps the caches fresh: compacted topics from the start,
    user events from now on (older ones are read from ClickHouse per user)."""

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
            topics.IMPRESSIONS: msgspec.json.Decoder(Impression),
        }

    def start(self) -> None:
        """Assign partitions and start consuming."""
        self._thread.start()

    def stop(self) -> None:
        """Stop consuming and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _assignments(self, consumer: Consumer) -> list[TopicPartition]:
        """Compacted topics from the start, events from now, impressions from a few minutes
        back: those may not be in ClickHouse yet when a restarted replica loads a user."""
        meta = consumer.list_topics(timeout=10)
        parts, recent = [], []
        for topic in self._decoders:
            start = OFFSET_END if topic.startswith("events.") else OFFSET_BEGINNING
            for p in meta.topics[topic].partitions:
                if topic == topics.IMPRESSIONS:
                    since_ms = int((time.time() - IMPRESSIONS_REPLAY_S) * 1000)
                    recent.append(TopicPartition(topic, p, since_ms))
                else:
                    parts.append(TopicPartition(topic, p, start))
        if recent:
            try:
                found = consumer.offsets_for_times(recent, timeout=10)
            except KafkaException:
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
                    "fetch.wait.max.ms": 20,
                },
            )
        )
        consumer.assign(self._assignments(consumer))
        try:
            while not self._stop.is_set():
                batch = consumer.consume(1000, 0.02)  # returns at 1000 or the timeout
                vectors = Vectors()
                for msg in batch:
                    if msg.error() is not None:
                        continue
                    self._apply(msg.topic() or "", msg.key(), msg.value(), vectors)
                if vectors.items or vectors.removed_items:
                    self._state.apply_vectors(vectors.items, vectors.removed_items)
                if vectors.users or vectors.removed_users:
                    self._state.apply_user_vectors(vectors.users, vectors.removed_users)
        finally:
            consumer.close()

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
        if isinstance(decoded, Impression):
            self._state.apply_impression(decoded)
        elif isinstance(decoded, UserVector):
            vectors.users.append(decoded)
        elif isinstance(decoded, ItemVector):
            vectors.items.append(decoded)
        elif isinstance(decoded, ItemFeatures):
            self._state.apply_features(decoded)
        elif isinstance(decoded, Item):
            self._state.apply_item(decoded)
        else:
            self._state.apply_event(decoded)
