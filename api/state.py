"""What a feed request reads: caches bootstrapped from ClickHouse, kept fresh from topics.

Items, creators and tags are integer codes (`api.codes`): per-item facts are numpy columns
(`api.item_columns`), the vector index answers in codes, and a user's seen set, blocks and
follows are sets of codes, so a feed filters and ranks 10,000 candidates with a few numpy
calls and no string in sight until the response is written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from clickhouse_connect.driver.client import Client
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)

from api.codes import Codes, Interner
from api.index import ByName, VectorIndex
from api.item_columns import NO_CODE, ItemColumns
from models.affinity import Affinity, Momentum
from models.covisit import PAIR_WINDOW, CoVisits
from models.embeddings import Vector, normalized, normalized_rows
from models.features import (
    COUNTERS,
    DAY,
    EARLY_SKIP_FRACTION,
    EARLY_SKIP_MS,
    FRESH_HOURS,
    PLAY_KINDS,
    POSITIVE_KINDS,
    POSITIVE_WATCH_MS,
    Session,
    advance_session,
    affinity_weight,
    early_skip_ms,
    engagement_weight,
    exposure_rooms,
    packed_counts,
    reaction_draws,
    trending_scores,
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
from swipeloop.erasure import Erased
from swipeloop.kafka import client_config
from swipeloop.metrics import FEATURE_LAG, VECTOR_LAG
from swipeloop.settings import Settings

log = logging.getLogger(__name__)
RECENT_POSITIVES = 20
FRESH_POOL = 1_000  # new uploads with room at their exposure stage, kept ready per second
TRENDING_DEPTH = 50_000  # items ranked by trending score, kept ready per second
FOLLOW_FETCH_BYTES = 1 << 20  # what a follower's fetch waits for (or `follow_wait_ms`)
REFRESH_S = 1.0  # how often the shared lists are recomputed (`ServingState.refresh`)
STALE_S = 2.0  # a shared list older than this is recomputed by the request that reads it
REPLAY_S = 300  # the feeder re-reads this much of events and impressions before bootstrap
SEEN_DAYS = 30
USER_TOPICS = frozenset({topics.EVENTS_ACTIONS, topics.EVENTS_CONTEXT, topics.IMPRESSIONS})
EMPTY: Codes = np.zeros(0, dtype=np.int64)

# A user's recent history, aggregated in ClickHouse at bootstrap (one row per user). Seen:
# what any replica served, and what the phone says it showed (`impression` events).
USERS_SEEN_SQL = """
SELECT user_id, groupUniqArray(item_id)
FROM
(
    SELECT user_id, item_id FROM impressions WHERE served_at >= {since:DateTime64(3)}
    UNION ALL
    SELECT user_id, item_id FROM events
    WHERE kind = 'impression' AND client_ts >= {since:DateTime64(3)}
)
GROUP BY user_id
"""
USERS_SIGNALS_SQL = """
SELECT user_id,
       groupUniqArrayIf(item_id, kind = 'block'),
       groupUniqArrayIf(item_id, kind = 'follow'),
       groupUniqArrayIf(item_id, kind = 'not_interested'),
       arraySlice(arrayMap(x -> x.2, arraySort(x -> x.1, groupArrayIf((client_ts, item_id),
           kind IN {positive:Array(String)}
           OR (kind = 'watch' AND watch_ms >= {positive_watch_ms:UInt32})))), -{keep:UInt32})
FROM events WHERE client_ts >= {since:DateTime64(3)} AND kind != 'impression'
GROUP BY user_id
"""

# Each user's videos watched past the early-skip mark in the last `COVISIT_HOURS`, in order,
# up to where the feeder's replay of the topics starts (counts are not idempotent, as sets are).
USERS_WATCHED_SQL = """
SELECT user_id, arrayMap(x -> x.2, arraySort(x -> x.1, groupArray((client_ts, e.item_id))))
FROM events AS e
LEFT JOIN (SELECT item_id, duration_ms FROM items FINAL) AS i ON i.item_id = e.item_id
WHERE e.client_ts >= {since:DateTime64(3)} AND e.received_at < {until:DateTime64(3)}
    AND e.kind IN {plays:Array(String)}
    AND e.watch_ms >= if(i.duration_ms > 0,
                         least({early_ms:UInt32}, {early_fraction:Float64} * i.duration_ms),
                         {early_ms:UInt32})
GROUP BY user_id
"""
COVISIT_HOURS = 24


class Shown(msgspec.Struct, frozen=True):
    """What a replica reads of an `Impression` on the topic (every replica reads every one:
    decoding two fields skips the rest, features included, at a fraction of the cost)."""

    user_id: str
    item_id: str


@dataclass
class UserState:
    """What the API remembers of one user (item and creator codes): what was shown, liked,
    blocked, followed, hidden."""

    user_id: str = ""
    seen: set[int] = field(default_factory=set)
    positives: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_POSITIVES))
    blocked_creators: set[int] = field(default_factory=set)
    followed: set[int] = field(default_factory=set)
    hidden_items: set[int] = field(default_factory=set)
    session: Session = field(default_factory=Session)
    watched: deque[int] = field(default_factory=lambda: deque(maxlen=PAIR_WINDOW))
    tag_affinity: Affinity = field(default_factory=Affinity)  # what they like now (tag codes)
    creator_affinity: Affinity = field(default_factory=Affinity)  # (creator codes)


def as_codes(values: set[int] | deque[int]) -> Codes:
    """A set of codes as an array (a copy: the feeder thread may add meanwhile)."""
    return np.fromiter(list(values), np.int64) if values else EMPTY


class ServingState:
    """Catalog, windowed features, item vectors and users, shared by all requests."""

    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.items = Interner()  # item id <-> code (rows of `columns`, ids of `index`)
        self.creators = Interner()
        self.tags = Interner()
        self.columns = ItemColumns()
        self.catalog: dict[str, Item] = {}
        self.deleted: set[str] = set()  # items taken down
        self.creator_items: dict[int, list[int]] = {}  # creator -> items, in upload order
        self.index = VectorIndex(
            settings.embedding_dim, names=self.items, candidates_per_result=settings.ann_oversample
        )
        self.vectors = ByName(self.index)  # items, unit length
        self.user_vectors: dict[str, Vector] = {}  # learned online (own or cold), unit length
        self.covisits = CoVisits()  # videos watched one after the other, by anyone
        self.momentum = Momentum()  # how everyone takes each tag now against usually
        self.users: dict[str, UserState] = {}
        self.erased = Erased()  # users who asked to be forgotten (swipeloop.erasure)
        self.replay_from_ms = int((time.time() - REPLAY_S) * 1000)
        self._client = client
        self._client_lock = threading.Lock()
        self._lists: dict[str, tuple[float, npt.NDArray[Any]]] = {}  # name -> (when, value)
        self._compute_lock = threading.RLock()  # a list may read another one
        self._draws = np.random.default_rng()  # the fresh pool's Thompson draws
        self._grow_lock = threading.Lock()

    def code(self, item_id: str) -> int:
        """An item's code, with a row in the columns before anyone can hold it."""
        code = self.items.get(item_id)
        if code is None:
            return int(self.codes([item_id])[0])
        return code

    def codes(self, item_ids: list[str]) -> Codes:
        """Items' codes, rows reserved."""
        codes = self.items.codes(item_ids)
        if len(self.items) > len(self.columns):
            with self._grow_lock:
                self.columns = self.columns.grown(len(self.items))
        return codes

    # ---- bootstrap from ClickHouse (what survives a restart of a memory-only broker) ----

    def bootstrap(self) -> None:
        """Fill the caches from ClickHouse once at start; the feeder then replays the topics
        from a little before this moment, so nothing falls in between."""
        self.replay_from_ms = int((time.time() - REPLAY_S) * 1000)
        since = datetime.now(UTC) - timedelta(days=SEEN_DAYS)
        with self._client_lock:
            self.erased.refresh(self._client)  # before the topics replay the last minutes
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
            seen = self._client.query(USERS_SEEN_SQL, parameters={"since": since}).result_rows
            signals = self._client.query(
                USERS_SIGNALS_SQL,
                parameters={
                    "since": since,
                    "positive": sorted(POSITIVE_KINDS),
                    "positive_watch_ms": POSITIVE_WATCH_MS,
                    "keep": 5 * RECENT_POSITIVES,
                },
            ).result_rows
            watched = self._client.query(
                USERS_WATCHED_SQL,
                parameters={
                    "since": datetime.now(UTC) - timedelta(hours=COVISIT_HOURS),
                    "until": datetime.fromtimestamp(self.replay_from_ms / 1000, UTC),
                    "plays": sorted(PLAY_KINDS),
                    "early_ms": EARLY_SKIP_MS,
                    "early_fraction": EARLY_SKIP_FRACTION,
                },
            ).result_rows
        for item_id, creator, duration, tags, sound, created, deleted in items:
            self.apply_item(
                Item(
                    item_id=item_id,
                    creator_id=creator,
                    duration_ms=duration,
                    tags=list(tags),
                    sound_id=sound or None,
                    created_at=created.replace(tzinfo=UTC),
                    deleted=bool(deleted),
                )
            )
        windows: dict[str, list[tuple[int, datetime, list[float]]]] = {}
        for item_id, window_s, (end, *counts) in feats:
            windows.setdefault(item_id, []).append((window_s, end.replace(tzinfo=UTC), counts))
        for item_id, closed in windows.items():
            self.apply_features(
                ItemFeatures(
                    item_id=item_id,
                    as_of=max(end for _, end, _ in closed),
                    window_s=[length for length, _, _ in closed],
                    window_end=[end for _, end, _ in closed],
                    counts=packed_counts(np.array([counts for _, _, counts in closed])),
                )
            )
        live = [k for k, item_id in enumerate(ids) if item_id not in self.deleted]
        # (ids are distinct: one current row per id); exact at once, the IVF follows behind
        self.index.upsert_codes(self.codes([ids[k] for k in live]), normalized_rows(matrix[live]))
        self.user_vectors.update(zip(users, normalized_rows(user_matrix), strict=True))
        for user_id, shown in seen:
            self.user(user_id).seen.update(self.codes(shown).tolist())
        for user_id, blocked, followed, hidden, positives in signals:
            user = self.user(user_id)
            user.blocked_creators.update(self._creators_of(blocked))
            user.followed.update(self._creators_of(followed))
            user.hidden_items.update(self.codes(hidden).tolist())
            for code in self.codes(positives).tolist():
                if code not in user.positives:
                    user.positives.append(code)
        for user_id, items in watched:
            user = self.user(user_id)
            for code in self.codes(items).tolist():
                self.covisits.add(user.watched, code)
                user.watched.append(code)
        log.info(
            "bootstrapped %d items, %d feature rows, %d item and %d user vectors, %d users",
            len(self.catalog),
            len(windows),
            len(self.index),
            len(self.user_vectors),
            len(self.users),
        )

    def _creators_of(self, item_ids: list[str]) -> list[int]:
        return [
            self.creators.code(self.catalog[i].creator_id) for i in item_ids if i in self.catalog
        ]

    # ---- stream updates ----

    def apply_item(self, item: Item) -> None:
        """A new or changed catalog entry; a deleted one leaves the catalog and the index."""
        code = self.code(item.item_id)
        creator = self.creators.code(item.creator_id)
        tag = self.tags.code(item.tags[0]) if item.tags else NO_CODE
        if item.deleted:
            self.deleted.add(item.item_id)
            if self.catalog.pop(item.item_id, None) is not None:
                self.creator_items[creator].remove(code)  # rare: a list scan is fine
            self.columns.set_item(code, item, creator, tag)
            self.columns.clear_features(code)
            self.index.remove_codes(np.array([code]))
        else:
            self.deleted.discard(item.item_id)
            if item.item_id not in self.catalog:
                self.creator_items.setdefault(creator, []).append(code)
            self.catalog[item.item_id] = item
            self.columns.set_item(code, item, creator, tag)

    def apply_features(self, f: ItemFeatures) -> None:
        """Keep the newest windows of each item in the catalog."""
        if f.item_id not in self.deleted:
            self.columns.set_features(self.code(f.item_id), f)

    def apply_vectors(self, vectors: list[ItemVector], removed: list[str] | None = None) -> None:
        """New item vectors go straight into the index (a taken-down item's, still in flight,
        never brings it back); expired items leave it."""
        fresh = {v.item_id: v.vector for v in vectors if v.item_id not in self.deleted}
        if fresh:
            matrix = normalized_rows(np.asarray(list(fresh.values()), dtype=np.float32))
            self.index.upsert_codes(self.codes(list(fresh)), matrix)
        if removed:
            self.index.remove_codes(self.items.known(removed))

    def apply_user_vectors(self, vectors: list[UserVector], removed: list[str]) -> None:
        """Users' vectors as the embeddings flow learns them; expired users are dropped."""
        for v in vectors:
            if v.user_id in self.erased.users:  # published before the flow knew
                continue
            self.user_vectors[v.user_id] = normalized(np.asarray(v.vector, dtype=np.float32))
        for user_id in removed:
            self.user_vectors.pop(user_id, None)

    def apply_impression(self, imp: Impression | Shown) -> None:
        """An item shown by any replica: its user never sees it again."""
        if imp.user_id not in self.erased.users:
            self.user(imp.user_id).seen.add(self.code(imp.item_id))

    def apply_event(self, ev: ReceivedEvent) -> None:
        """A user's own signals: positives shape their vector, negatives filter their feed."""
        if ev.user_id in self.erased.users:
            return
        user = self.user(ev.user_id)
        item = self.catalog.get(ev.item_id)
        code = self.code(ev.item_id)
        duration = item.duration_ms if item else None
        user.session = advance_session(
            user.session, ev.session_id, ev.client_ts.timestamp(), ev.kind, ev.watch_ms, duration
        )
        if item is not None and ev.kind != "impression":
            weight = affinity_weight(ev.kind, ev.watch_ms, duration)
            if weight:
                at = ev.client_ts.timestamp()
                user.creator_affinity.add(self.creators.code(item.creator_id), weight, at)
                for tag in self.tags.codes(item.tags).tolist():
                    user.tag_affinity.add(tag, weight, at)
                    self.momentum.add(tag, weight, at)
        if ev.kind in PLAY_KINDS and ev.watch_ms >= early_skip_ms(duration):
            self.covisits.add(user.watched, code)  # watched: co-visited with the last ones
            user.watched.append(code)
        if ev.kind == "impression":
            user.seen.add(code)
        elif ev.kind == "block":
            if item is not None:
                user.blocked_creators.add(self.creators.code(item.creator_id))
        elif ev.kind == "follow":
            if item is not None:
                user.followed.add(self.creators.code(item.creator_id))
        elif ev.kind == "not_interested":
            user.hidden_items.add(code)
        elif engagement_weight(ev.kind, ev.watch_ms) > 0 and code not in user.positives:
            user.positives.append(code)

    # ---- reads for a feed ----

    def user(self, user_id: str) -> UserState:
        """A user's state (a user unknown at bootstrap and since has no history)."""
        user = self.users.get(user_id)
        if user is None:
            user = self.users.setdefault(user_id, UserState(user_id))
        return user

    def user_vector(self, user: UserState) -> Vector | None:
        """The user's taste: the vector the embeddings flow learned for them (or, for a new
        user, the mean of their first session's items); before the flow has published one,
        the mean of the vectors of the items they recently engaged with."""
        learned = self.user_vectors.get(user.user_id)
        if learned is not None:
            return learned
        return self.taste(as_codes(user.positives))

    def taste(self, codes: Codes) -> Vector | None:
        """A user vector made of items: the mean of their vectors, with the bias coordinate
        at 1 as in every learned user vector (None: none of them has a vector)."""
        rows = self.index.vectors(codes)
        rows = rows[np.any(rows != 0, axis=1)]
        if not len(rows):
            return None
        mean = rows.mean(axis=0)
        mean[-1] = 1.0
        return normalized(mean)

    def vector(self, code: int) -> Vector | None:
        """One item's vector (None: it has none)."""
        return self.index.vectors(np.array([code]))[0] if self.index.has(code) else None

    def trending_scores(self) -> npt.NDArray[np.float64]:
        """Every item's trending score by code (0 without live features)."""
        return self._cached("trending_scores")

    def trending(self) -> Codes:
        """Items in the catalog with live features, best trending score first (the top
        `TRENDING_DEPTH`)."""
        return self._cached("trending")

    def fresh_pool(self) -> Codes:
        """New uploads (`FRESH_HOURS`) that still have room at their exposure stage, in the
        order of this second's Thompson draws of their audience's reaction
        (`models.features.reaction_draws`): untested ones anywhere, the ones their first
        viewers finished ahead more often. Only the ones an audience liked go on to a
        larger one (`models.features.exposure_stages`)."""
        return self._cached("fresh_pool")

    def fresh_ranks(self, codes: Codes) -> Codes:
        """Each item's place in the fresh pool (-1: not in it; a gather, where a set lookup
        of 500 codes in 1,000 cost ~0.4 ms)."""
        ranks: Codes = self._cached("fresh_ranks")
        inside = codes < len(ranks)  # items newer than the ranks are not in the pool
        return np.where(inside, ranks[np.where(inside, codes, 0)], -1)

    def catalog_order(self) -> Codes:
        """Every item in the catalog: trending first, then the rest (the last resort)."""
        return self._cached("catalog_order")

    def popular(self) -> Codes:
        """Every item in the catalog by plays in the last 24 h, most first (for the
        popularity and batch policies: computed when asked, not by the refresher)."""
        return self._cached("popular")

    def by_creators(self, creators: set[int]) -> Codes:
        """The items of these creators in the catalog, newest uploads first."""
        lists = [self.creator_items.get(c, [])[::-1] for c in list(creators)]
        codes = np.fromiter((c for items in lists for c in items), np.int64)
        return codes[self.columns.alive[codes]]

    # ---- the lists every feed reads, recomputed once a second off the request path ----

    # each computed by the method of its name with a leading underscore; a list may read
    # one before it, so this is the order they are refreshed in
    LISTS = ("trending_scores", "trending", "fresh_pool", "fresh_ranks", "catalog_order")

    def forget_users(self, users: set[str]) -> None:
        """Erased users: what this replica holds of them goes (seen set, signals, session,
        vector); their events still on the topics are passed over."""
        for user_id in users:
            self.users.pop(user_id, None)
            self.user_vectors.pop(user_id, None)

    def follow_erasures(self) -> None:
        """Forget the users erased since the last call (by any replica or the CLI)."""
        with self._client_lock:
            erased = self.erased.refresh(self._client)
        self.forget_users(erased)

    def refresh(self) -> None:
        """Recompute the shared lists (the API's refresher thread calls this every second)."""
        for name in self.LISTS:
            self._lists[name] = (time.monotonic(), getattr(self, f"_{name}")())

    def _cached(self, name: str) -> npt.NDArray[Any]:
        """The list as last refreshed; computed here only when it is missing or the refresher
        has not run for `STALE_S` (a state without one, as in tests)."""
        hit = self._lists.get(name)
        if hit is not None and time.monotonic() - hit[0] < STALE_S:
            return hit[1]
        with self._compute_lock:
            value: npt.NDArray[Any] = getattr(self, f"_{name}")()
            self._lists[name] = (time.monotonic(), value)
        return value

    def _trending_scores(self) -> npt.NDArray[np.float64]:
        cols = self.columns
        live = np.flatnonzero(~np.isnan(cols.as_of_s))
        scores = np.zeros(len(cols), dtype=np.float64)
        scores[live] = trending_scores(cols.counts[live], cols.as_of_s[live], time.time())
        return scores

    def _trending(self) -> Codes:
        scores, cols = self.trending_scores(), self.columns
        size = min(len(scores), len(cols))
        ranked = np.flatnonzero(~np.isnan(cols.as_of_s[:size]) & cols.alive[:size])
        if len(ranked) > TRENDING_DEPTH:
            ranked = ranked[np.argpartition(-scores[ranked], TRENDING_DEPTH)[:TRENDING_DEPTH]]
        return ranked[np.argsort(-scores[ranked], kind="stable")]

    def _fresh_pool(self) -> Codes:
        cols = self.columns
        new = np.flatnonzero(cols.alive & (cols.created_s >= time.time() - FRESH_HOURS * 3600))
        day = np.zeros((len(new), len(COUNTERS)), dtype=np.float32)  # unseen: all zero
        counted = ~np.isnan(cols.as_of_s[new])
        day[counted] = cols.counts[new[counted], DAY]
        room = exposure_rooms(day) > 0
        new, key = new[room], -reaction_draws(day[room], self._draws)
        if len(new) > FRESH_POOL:
            keep = np.argpartition(key, FRESH_POOL)[:FRESH_POOL]
            new, key = new[keep], key[keep]
        return new[np.argsort(key, kind="stable")]

    def _fresh_ranks(self) -> Codes:
        ranks = np.full(len(self.columns), -1, dtype=np.int64)
        pool = self.fresh_pool()
        ranks[pool] = np.arange(len(pool))
        return ranks

    def _popular(self) -> Codes:
        alive = np.flatnonzero(self.columns.alive)
        plays = self.columns.counts[alive, DAY, COUNTERS.index("plays")]
        return alive[np.argsort(-plays, kind="stable")]

    def _catalog_order(self) -> Codes:
        trending, rest = self.trending(), self.columns.alive.copy()
        rest[trending] = False
        return np.concatenate([trending, np.flatnonzero(rest)])


@dataclass
class Vectors:
    """Vector updates of one consumer poll, applied together."""

    items: list[ItemVector] = field(default_factory=list)
    removed_items: list[str] = field(default_factory=list)
    users: list[UserVector] = field(default_factory=list)
    removed_users: list[str] = field(default_factory=list)


class Feeder:
    """One consumer thread that keeps the caches fresh: compacted topics from the start,
    user events and impressions from a little before bootstrap (`REPLAY_S`; what came
    earlier was read from ClickHouse)."""

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
