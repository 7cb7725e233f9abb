"""One frozen settings object, read from SWIPELOOP_* variables at the edge and passed down."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class SettingsError(ValueError):
    """A SWIPELOOP_* variable holds a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know about where things are and how big they are."""

    # Broker: unset means "spawn the embedded Tansu broker".
    kafka_bootstrap: str | None = None
    topic_partitions: int = 3
    # Distinguishes runs of a memory-only embedded broker, whose offsets restart at 0.
    broker_epoch: str = ""
    # ClickHouse: unset URL means "chdb on data_dir / clickhouse".
    clickhouse_url: str | None = None
    clickhouse_database: str = "swipeloop"
    data_dir: Path = Path("var")
    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_role: str = "all"  # all | ingest | feed (see `swipeloop api --role`)
    ack_timeout_s: float = 2.0
    ack_linger_ms: float = 1.0  # the API producer's linger (batching vs. ack latency)
    # the feed's impression log (fire and forget): a longer linger, fewer produce requests
    impression_linger_ms: float = 20.0
    # the feed API's topic follower: a fetch waits this long for a batch to fill (broker CPU
    # vs. how soon replicas see each other's impressions and the flows' updates)
    follow_wait_ms: int = 100
    max_batch_events: int = 500
    max_body_bytes: int = 1_048_576
    # Who may call the API (api.security): comma-separated bearer keys, from the environment
    # only. A class left empty answers loopback callers only.
    app_keys: str = dataclasses.field(default="", repr=False)  # events, items, feeds
    admin_keys: str = dataclasses.field(default="", repr=False)  # erasure, take-downs, metrics
    rate_limit_per_s: int = 5000  # requests per second per key (per address without one); 0: off
    cors_origins: str = ""  # comma-separated origins a browser may call from; empty: no CORS
    # Feed
    feed_default_n: int = 20
    feed_max_n: int = 100
    candidates: int = 10_000
    rank_slice: int = 500
    # feeds built at once; more wait their turn; 0: two per core (threads waiting to get the
    # GIL back after faiss or numpy leave a core idle: one per core gave 8 % fewer feeds/s at
    # 200,000 items, the same at 1,000,000; bench/RESULTS.md)
    feed_concurrency: int = 0
    ann_oversample: float = 6.0  # vectors scanned per ANN result (recall/cost: bench/RESULTS.md)
    # Flows
    flow_batch_size: int = 1000
    flow_idle_s: float = 0.02  # how long a source partition sleeps when a poll found nothing
    # how often flow state and offsets are snapshotted (recovery): a snapshot waits for the
    # rows it covers to be in ClickHouse, so shorter epochs cost throughput (bench/RESULTS.md)
    flow_epoch_s: float = 5.0
    flow_flush_s: float = 0.5  # ingest inserts buffered rows at least this often ...
    flow_flush_rows: int = 50_000  # ... or once this many are buffered (big inserts are cheap)
    dedup_window_s: float = 600.0  # a retried event_id within this window is stored once
    dedup_max_ids: int = 200_000  # per source partition
    gap_metric_interval_s: float = 15.0  # how often the session-gap gauges are refreshed
    metrics_port: int = 9464  # Prometheus /metrics of `swipeloop up` and `flows run` (0: off)
    flow_api_port: int = 0  # `flows run`: Bytewax's dataflow API server (/dataflow, /metrics)
    feature_lateness_s: int = 10  # an event older than its partition's newest minus this is late
    feature_emit_s: float = 0.5  # how often live windows that changed are published
    feature_shards: int = 8  # phase-two shards (spread over the workers)
    feature_batch_size: int = 10_000  # events per poll (bigger polls: less cost per event)
    feature_idle_s: float = 5.0  # a partition silent this long no longer holds windows open
    embedding_dim: int = 64
    embedding_lr: float = 0.1
    embedding_negatives: int = 3  # label-0 items drawn per positive
    embedding_uniform_negatives: float = 1.0  # share of them drawn uniformly (rest: impressions)
    embedding_min_count: int = 5  # sightings before an id gets a vector of its own
    embedding_ttl_s: int = 7 * 86_400  # event seconds unseen before an id's vector expires
    embedding_fp16: bool = False  # store vectors as float16 (half the memory)
    embedding_batch_size: int = 5000  # events per poll of the embeddings flow
    explore_every: int = 10  # every n-th feed slot explores the fresh pool (0: never)
    publish_interval_s: float = 1.0  # how often changed vectors are published
    # Trainer
    train_cron: str = "0 3 * * *"
    label_window_s: int = 3600
    # a new model serves only if its holdout NDCG@10 beats production's by at least this
    promote_margin: float = 0.0
    model_poll_s: float = 2.0
    # Demo
    seed_items: int = 5000

    @property
    def embedded_broker(self) -> bool:
        """True when this process must spawn its own broker."""
        return self.kafka_bootstrap is None

    @property
    def clickhouse_dsn(self) -> str:
        """The clickhouse-connect DSN: the server URL, or chdb on the local data directory."""
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def models_dir(self) -> Path:
        """Where versioned model artefacts are written and read."""
        return self.data_dir / "models"

    def bearer(self, admin: bool = False) -> dict[str, str]:
        """The header a client of this API sends: the first admin key (or, for app routes,
        the first app key); none when no such key is set (the loopback default)."""
        keys = keys_of(self.admin_keys)
        if not admin:
            keys = keys_of(self.app_keys) + keys
        return {"Authorization": f"Bearer {keys[0]}"} if keys else {}

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (e.g. the bootstrap of a broker just spawned)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every field from SWIPELOOP_<FIELD_NAME>; unknown or unset fields keep defaults."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(f"SWIPELOOP_{field.name.upper()}")
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(field.name, str(field.type), raw)
        return cls(**values)  # type: ignore[arg-type]


def keys_of(raw: str) -> list[str]:
    """The keys of a comma-separated key setting (blanks dropped)."""
    return [k.strip() for k in raw.split(",") if k.strip()]


def _parse(name: str, type_name: str, raw: str) -> object:
    try:
        if type_name.startswith("int"):
            return int(raw)
        if type_name.startswith("float"):
            return float(raw)
        if type_name.startswith("Path"):
            return Path(raw)
        if type_name.startswith("bool"):
            return raw.lower() in {"1", "true", "yes", "on"}
    except ValueError as exc:
        raise SettingsError(f"SWIPELOOP_{name.upper()}={raw!r}: expected {type_name}") from exc
    return raw
