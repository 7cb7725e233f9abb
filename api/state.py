"""What a feed request reads: caches bootstrapped from ClickHouse, kept fresh from topics.

Items, creators and tags are integer codes (`api.codes`): per-item facts are numpy columns
(`api.item_columns`), the vector index answers in codes, and a user's seen set, blocks and
follows are sets of codes, so a feed filters and ranks 10,000 candidates with a few numpy
calls and no string in sight until the response is written.

The state holds the caches and the appliers that change them; it starts from a snapshot of
ClickHouse (`api.bootstrap`), a feeder thread applies each message of the topics
(`api.feeder`), and the lists every feed reads are recomputed once a second (`api.lists`).

Each item costs a replica its row of the columns, its id (interned once), and its vector once,
in the index's lists (`api.index`); the catalog is a view of the columns (`memory` says what
each part holds).
"""

from __future__ import annotations

import logging
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import msgspec
import numpy as np
import numpy.typing as npt
from clickhouse_connect.driver.client import Client

from api.bootstrap import CatalogRows, read_snapshot, replay_start_ms
from api.codes import Interner
from api.index import ByName, VectorIndex
from api.item_columns import NO_CODE, Catalog, ItemColumns, Names
from api.lists import Lists
from models.affinity import Affinity, Momentum
from models.covisit import REMEMBERED, CoVisitConfig, CoVisits
from models.embeddings import normalized, normalized_rows
from models.features.context import ContextCompletion
from models.features.session import Session, advance_session
from models.features.weights import PLAY_KINDS, affinity_weight, early_skip_ms, engagement_weight
from swipeloop.arrays import Codes, Vector, Vectors
from swipeloop.contracts import (
    NETWORKS,
    Impression,
    Item,
    ItemFeatures,
    ItemVector,
    ReceivedEvent,
    UserVector,
)
from swipeloop.erasure import Erased
from swipeloop.settings import Settings

log = logging.getLogger(__name__)
RECENT_POSITIVES = 20
EMPTY: Codes = np.zeros(0, dtype=np.int64)
NORMALIZE_ROWS = 65_536  # rows normalized at once, in place
ID_BYTES = 140  # an interned id: its string, its dict entry and code, its slot (measured, 1M)
USER_VECTOR_OVERHEAD = 250  # a user vector's array object, dict entry and id string


def normalize_in_place(matrix: Vectors) -> Vectors:
    """Every row at unit length (a zero row stays zero), in the matrix itself: at bootstrap a
    copy would be another 256 MB at a million items."""
    for start in range(0, len(matrix), NORMALIZE_ROWS):
        block = matrix[start : start + NORMALIZE_ROWS]
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        block /= np.where(norms > 0, norms, 1.0)
    return matrix


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
    watched: deque[int] = field(default_factory=lambda: deque(maxlen=REMEMBERED))
    tag_affinity: Affinity = field(default_factory=Affinity)  # what they like now (tag codes)
    creator_affinity: Affinity = field(default_factory=Affinity)  # (creator codes)
    network: str = ""  # the network type their phone last reported ("" : never)

    def creator_choice(self, creator: int, kind: str) -> None:
        """A follow, block, or the undoing of one (`CREATOR_CHOICES`)."""
        if kind == "follow":
            self.followed.add(creator)
        elif kind == "unfollow":
            self.followed.discard(creator)
        elif kind == "block":
            self.blocked_creators.add(creator)
        elif kind == "unblock":
            self.blocked_creators.discard(creator)


CREATOR_CHOICES = frozenset({"follow", "unfollow", "block", "unblock"})  # about an item's creator


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
        self.sounds = Interner()
        self.columns = ItemColumns()
        self.catalog = Catalog(  # items in the catalog by id, read back from the columns
            Names(self.items, self.creators, self.tags, self.sounds), lambda: self.columns
        )
        self.deleted: set[str] = set()  # items taken down
        self.creator_items: dict[int, array[int]] = {}  # creator -> items, in upload order
        self.index = VectorIndex(
            settings.embedding_dim, names=self.items, candidates_per_result=settings.ann_oversample
        )
        self.vectors = ByName(self.index)  # items, unit length
        self.user_vectors: dict[str, Vector] = {}  # learned online (own or cold), unit length
        # videos watched one after the other, by anyone
        self.covisits = CoVisits(CoVisitConfig.of(settings))
        self.momentum = Momentum()  # how everyone takes each tag now against usually
        self.context = ContextCompletion()  # completion by network type and video length
        self.users: dict[str, UserState] = {}
        self.erased = Erased()  # users who asked to be forgotten (swipeloop.erasure)
        self.replay_from_ms = replay_start_ms()  # where the feeder replays the user topics from
        self._client = client
        self._client_lock = threading.Lock()
        # what "now" is when a page is scored (seconds since the epoch): the wall clock; a
        # replay pins it to the end of its timeline, so its figures do not depend on how long
        # the replay took
        self.clock: Callable[[], float] = time.time
        self._lists = Lists(lambda: self.columns, self.now_s)
        self._grow_lock = threading.Lock()

    def now_s(self) -> float:
        """What time it is for scoring (`clock`), in seconds since the epoch."""
        return self.clock()

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
        self.replay_from_ms = replay_start_ms()
        with self._client_lock:
            self.erased.refresh(self._client)  # before the topics replay the last minutes
            snapshot = read_snapshot(
                self._client,
                self.settings.embedding_dim,
                self.replay_from_ms,
                positives=5 * RECENT_POSITIVES,  # repeats are passed over as they are applied
            )
        self.apply_catalog(snapshot.catalog)
        for features in snapshot.features:
            self.apply_features(features)
        ids, matrix = snapshot.item_vectors
        if self.deleted:
            live = [k for k, item_id in enumerate(ids) if item_id not in self.deleted]
            ids, matrix = [ids[k] for k in live], matrix[live]
        # (ids are distinct: one current row per id); exact at once, the IVF follows behind
        self.index.upsert_codes(self.codes(ids), normalize_in_place(matrix))
        users, user_matrix = snapshot.user_vectors
        self.user_vectors.update(zip(users, normalized_rows(user_matrix), strict=True))
        for user_id, shown in snapshot.seen:
            self.user(user_id).seen.update(self.codes(shown).tolist())
        for network, duration_ms, completion, plays in snapshot.context:
            if network in NETWORKS:
                self.context.add(network, duration_ms, completion, plays)
        for user_id, changes, hidden, positives, network in snapshot.signals:
            user = self.user(user_id)
            user.network = network
            for item_id, kind in changes:  # oldest first: the last word on a creator stands
                code = self.items.get(item_id)
                if code is not None and self.columns.alive[code]:
                    user.creator_choice(int(self.columns.creator[code]), kind)
            user.hidden_items.update(self.codes(hidden).tolist())
            for code in self.codes(positives).tolist():
                if code not in user.positives:
                    user.positives.append(code)
        for user_id, items in snapshot.watched:
            user = self.user(user_id)
            for code in self.codes(items).tolist():
                self.covisits.add(user.watched, code)
                user.watched.append(code)
        log.info(
            "bootstrapped %d items, %d feature rows, %d item and %d user vectors, %d users",
            len(self.catalog),
            len(snapshot.features),
            len(self.index),
            len(self.user_vectors),
            len(self.users),
        )

    def apply_catalog(self, catalog: CatalogRows) -> None:
        """Many catalog entries at once (the bootstrap's): as `apply_item` on each, in columns."""
        if not catalog.ids:
            return
        codes = self.codes(catalog.ids)
        rows = catalog.rows
        creators = self.creators.codes(catalog.creator_ids)[rows.creator]
        sounds = np.append(self.sounds.codes(catalog.sound_ids), NO_CODE)  # (NO_CODE: -1)
        rows = replace(
            rows,
            creator=creators,
            tag=self.tags.codes(catalog.tag_names)[rows.tag],
            sound=sounds[rows.sound],
        )
        columns = self.columns
        was_alive, previous = columns.alive[codes], columns.creator[codes]
        columns.set_items(codes, rows)
        if self.deleted:  # (taken down before: this snapshot may put some back)
            self.deleted.difference_update(catalog.ids[k] for k in np.flatnonzero(~rows.deleted))
        gone = np.flatnonzero(rows.deleted)
        if len(gone):
            self.deleted.update(catalog.ids[k] for k in gone.tolist())
            columns.clear_features(codes[gone])
            self.index.remove_codes(codes[gone])
        moved = creators != previous
        for row in np.flatnonzero(was_alive & (rows.deleted | moved)).tolist():  # (rare)
            self.creator_items[int(previous[row])].remove(int(codes[row]))
        new = np.flatnonzero(~rows.deleted & (~was_alive | moved))
        new = new[np.argsort(creators[new], kind="stable")]  # by creator, in snapshot order
        starts = np.flatnonzero(np.diff(creators[new])) + 1
        for group in np.split(codes[new], starts) if len(new) else ():
            creator = int(columns.creator[group[0]])
            self.creator_items.setdefault(creator, array("q")).frombytes(group.tobytes())

    # ---- stream updates ----

    def apply_item(self, item: Item) -> None:
        """A new or changed catalog entry; a deleted one leaves the catalog and the index."""
        code = self.code(item.item_id)
        creator = self.creators.code(item.creator_id)
        tags = self.tags.codes(item.tags)
        sound = self.sounds.code(item.sound_id) if item.sound_id else NO_CODE
        was_alive, previous = bool(self.columns.alive[code]), int(self.columns.creator[code])
        self.columns.set_item(code, item, creator, tags, sound)
        if was_alive and (item.deleted or creator != previous):
            self.creator_items[previous].remove(code)  # rare: a list scan is fine
        if item.deleted:
            self.deleted.add(item.item_id)
            self.columns.clear_features(np.array([code]))
            self.index.remove_codes(np.array([code]))
        else:
            self.deleted.discard(item.item_id)
            if not was_alive or creator != previous:
                self.creator_items.setdefault(creator, array("q")).append(code)

    def apply_features(self, f: ItemFeatures) -> None:
        """Keep the newest windows of each item in the catalog."""
        if f.item_id not in self.deleted:
            self.columns.set_features(self.code(f.item_id), f)

    def apply_vectors(self, vectors: list[ItemVector], removed: list[str] | None = None) -> None:
        """New item vectors go straight into the index (a taken-down item's, still in flight,
        never brings it back); expired items leave it."""
        fresh = {v.item_id: v.vector for v in vectors if v.item_id not in self.deleted}
        if fresh:
            matrix = normalize_in_place(np.asarray(list(fresh.values()), dtype=np.float32))
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
        code = self.code(ev.item_id)
        columns = self.columns
        known = bool(columns.alive[code])  # in the catalog
        creator = int(columns.creator[code])
        duration = int(columns.duration_ms[code]) if known else None
        user.session = advance_session(
            user.session, ev.session_id, ev.client_ts.timestamp(), ev.kind, ev.watch_ms, duration
        )
        if known and ev.kind != "impression":
            weight = affinity_weight(ev.kind, ev.watch_ms, duration)
            if weight:
                at = ev.client_ts.timestamp()
                user.creator_affinity.add(creator, weight, at)
                for tag in columns.tags_of(code).tolist():
                    user.tag_affinity.add(tag, weight, at)
                    self.momentum.add(tag, weight, at)
        if ev.context is not None and ev.context.network is not None:
            user.network = ev.context.network
            if known and duration and ev.kind in PLAY_KINDS:
                self.context.add(ev.context.network, duration, min(ev.watch_ms / duration, 1.0))
        if ev.kind in PLAY_KINDS and ev.watch_ms >= early_skip_ms(duration):
            self.covisits.add(user.watched, code)  # watched: co-visited with the last ones
            user.watched.append(code)
        if ev.kind == "impression":
            user.seen.add(code)
        elif ev.kind in CREATOR_CHOICES:
            if known:
                user.creator_choice(creator, ev.kind)
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
        return self._lists.get("trending_scores")

    def trending(self) -> Codes:
        """Items in the catalog with live features, best trending score first (the top
        `api.lists.TRENDING_DEPTH`)."""
        return self._lists.get("trending")

    def fresh_pool(self) -> Codes:
        """New uploads (`FRESH_HOURS`) that still have room at their exposure stage, in the
        order of this second's Thompson draws of their audience's reaction
        (`models.features.exposure.reaction_draws`): untested ones anywhere, the ones their first
        viewers finished ahead more often. Only the ones an audience liked go on to a
        larger one (`models.features.exposure.exposure_stages`)."""
        return self._lists.get("fresh_pool")

    def fresh_ranks(self, codes: Codes) -> Codes:
        """Each item's place in the fresh pool (-1: not in it; a gather, where a set lookup
        of 500 codes in 1,000 cost ~0.4 ms)."""
        ranks: Codes = self._lists.get("fresh_ranks")
        inside = codes < len(ranks)  # items newer than the ranks are not in the pool
        return np.where(inside, ranks[np.where(inside, codes, 0)], -1)

    def catalog_order(self) -> Codes:
        """Every item in the catalog: trending first, then the rest (the last resort)."""
        return self._lists.get("catalog_order")

    def memory(self) -> dict[str, int]:
        """Bytes each part of the state holds (numpy parts exactly, the rest estimated)."""
        ids = len(self.items)
        return {
            "item_columns": self.columns.nbytes(),
            **{f"index_{part}": size for part, size in self.index.memory().items()},
            "item_ids": ids * ID_BYTES,
            "creator_items": sum(len(items) for items in list(self.creator_items.values())) * 8,
            "shared_lists": self._lists.nbytes(),
            "user_vectors": len(self.user_vectors) * (USER_VECTOR_OVERHEAD + 4 * self.index.dim),
        }

    def popular(self) -> Codes:
        """Every item in the catalog by plays in the last 24 h, most first (for the
        popularity and batch policies: computed when asked, not by the refresher)."""
        return self._lists.get("popular")

    def refresh(self) -> None:
        """Recompute the shared lists (the API's refresher thread calls this every second)."""
        self._lists.refresh()

    def by_creators(self, creators: set[int]) -> Codes:
        """The items of these creators in the catalog, newest uploads first."""
        mine = [self.creator_items.get(c) for c in list(creators)]
        # (a copy of the bytes: a view would stop the feeder thread from appending to them)
        lists = [np.frombuffer(items.tobytes(), dtype=np.int64)[::-1] for items in mine if items]
        codes = np.concatenate(lists) if lists else EMPTY
        return codes[self.columns.alive[codes]]

    # ---- erasure ----

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
