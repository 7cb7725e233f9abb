"""What the shards of the embeddings flow in one process share: the settings they learn by,
the mirror they read and which of their keys writes it, the erased users, and the gauges
their figures add up to."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from dataflows.catalog import Catalog
from models.learning import KINDS, LearnerConfig
from models.mirror import Mirror, MirrorUpdate
from models.shards import shard_of
from swipeloop.arrays import Vectors
from swipeloop.clickhouse import connect, read_vectors, with_retry
from swipeloop.erasure import Erased
from swipeloop.metrics import EMBEDDING_IDS, EMBEDDING_STATE_BYTES
from swipeloop.settings import Settings

log = logging.getLogger(__name__)


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


class MirrorFeed:
    """The process's mirror, written through one of the shard keys the process holds.

    Every item shard's publication goes to every shard key (Bytewax has no broadcast, and
    each process holds at least one key): the first key that delivers one here becomes the
    one whose deliveries are applied, so each publication is applied once and a shard's
    publications in the order it made them (one channel from it to that key)."""

    def __init__(self, dim: int) -> None:
        self.mirror = Mirror(dim)
        self._via: str | None = None
        self._lock = threading.Lock()

    def deliver(self, via: str, update: MirrorUpdate) -> None:
        with self._lock:
            if self._via is None:
                self._via = via
            if via != self._via:
                return
        self.mirror.apply(update)


class ErasedUsers:
    """The users who asked to be forgotten (`swipeloop.erasure`), read again at most every
    `every_s` by whichever shard asks first; each shard takes those new to it."""

    def __init__(self, settings: Settings, every_s: float) -> None:
        self._client = connect(settings)
        self._every_s = every_s
        self._follower = Erased()
        self._order: list[str] = []  # in the order they became known here
        self._read_at = 0.0
        self._lock = threading.Lock()
        self.users: frozenset[str] = frozenset()

    def refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._read_at < self._every_s:
                return
            new = with_retry("read of erasures", lambda: self._follower.refresh(self._client))
            self._order.extend(sorted(new))
            self.users = self._follower.users
            self._read_at = time.monotonic()

    def since(self, seen: int) -> tuple[list[str], int]:
        """The users erased after the first `seen` known here, and how many are known now."""
        with self._lock:
            return self._order[seen:], len(self._order)


@dataclass
class Tally:
    """Gauges of the ids with a vector and the memory held, summed over the process's shards."""

    ids: dict[str, dict[str, int]] = field(default_factory=dict)
    nbytes: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self, shard: str, ids: dict[str, int], nbytes: int) -> None:
        with self.lock:
            self.ids[shard], self.nbytes[shard] = ids, nbytes
            for kind in KINDS:
                EMBEDDING_IDS.labels(kind).set(sum(v.get(kind, 0) for v in self.ids.values()))
            EMBEDDING_STATE_BYTES.set(sum(self.nbytes.values()))


@dataclass
class Shared:
    """One process's view of the sharded flow: what its shards learn by and share."""

    settings: Settings
    config: LearnerConfig
    shards: int
    catalog: Catalog
    feed: MirrorFeed
    erased: ErasedUsers
    tally: Tally


def shared(settings: Settings, shards: int, catalog: Catalog) -> Shared:
    config = learner_config(settings)
    erased = ErasedUsers(settings, settings.publish_interval_s)
    erased.refresh()
    return Shared(settings, config, shards, catalog, MirrorFeed(config.dim), erased, Tally())


def learned(settings: Settings, table: str, shard: int, shards: int) -> tuple[list[str], Vectors]:
    """The own (not cold) vectors ClickHouse holds of one shard's ids: a new embedded broker
    forgets its offsets and this flow's snapshots with them, not what was learned."""
    ids, matrix = read_vectors(connect(settings), settings.embedding_dim, table, own_only=True)
    mine = (shard_of(ids, shards) == shard).nonzero()[0]
    if len(mine):
        log.info("embeddings: %d vectors of %s loaded for shard %d", len(mine), table, shard)
    return [ids[i] for i in mine.tolist()], matrix[mine]
