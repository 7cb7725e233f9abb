"""One frozen settings object, read from SWIPELOOP_* variables at the edge and passed down."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_type_hints
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec
from croniter import croniter

PREFIX = "SWIPELOOP_"
KAFKA_PREFIX = PREFIX + "KAFKA_"  # what is not a setting of ours is a librdkafka setting
Route = Literal["user", "app", "admin"]  # whom a route serves (api.security)


class SettingsError(ValueError):
    """A SWIPELOOP_* variable that is not a setting, or holds a value that cannot be used."""


# what a value may be, checked where the environment is read (msgspec.Meta constraints)
Count = Annotated[int, msgspec.Meta(ge=1)]  # one or more
Size = Annotated[int, msgspec.Meta(ge=0)]  # zero or more (0: off, or a default)
Port = Annotated[int, msgspec.Meta(ge=0, le=65_535)]  # 0: none, or any free one
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Share = Annotated[float, msgspec.Meta(ge=0, le=1)]
Weight = Annotated[float, msgspec.Meta(ge=0)]


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know about where things are and how big they are."""

    # Broker: unset means "spawn the embedded Tansu broker".
    kafka_bootstrap: str | None = None
    topic_partitions: Count = 3
    # copies of each partition, and how many must have a write before it is acknowledged
    # (acks=all); 0: 1 on the embedded broker, 3 and 2 on a cluster (a single-node Redpanda
    # sets them to 1)
    topic_replicas: Size = 0
    topic_min_insync: Size = 0
    # any librdkafka setting for every client (SASL, TLS, ...): SWIPELOOP_KAFKA_<NAME>, the
    # name with dots as underscores (SWIPELOOP_KAFKA_SECURITY_PROTOCOL=SASL_SSL)
    kafka_config: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    # Distinguishes runs of a memory-only embedded broker, whose offsets restart at 0.
    broker_epoch: str = ""
    # ClickHouse: unset URL means "chdb on data_dir / clickhouse".
    clickhouse_url: str | None = None
    clickhouse_database: str = "swipeloop"
    # a ClickHouse cluster (remote_servers): set, migrations create Replicated* tables and
    # Distributed tables over them ON CLUSTER (swipeloop.cluster)
    clickhouse_cluster: str = ""
    # credentials kept out of the URL (compose passes them apart: a password may hold any
    # character, and a URL needs it percent-encoded); set, they replace the URL's own
    clickhouse_user: str = ""
    clickhouse_password: str = dataclasses.field(default="", repr=False)
    data_dir: Path = Path("var")
    # API
    api_host: str = "127.0.0.1"
    api_port: Port = 8000
    api_role: Literal["all", "ingest", "feed"] = (
        "all"  # all | ingest | feed (see `swipeloop api --role`)
    )
    ack_timeout_s: Seconds = 2.0
    ack_linger_ms: Weight = 1.0  # the API producer's linger (batching vs. ack latency)
    # the feed's impression log (fire and forget): a longer linger, fewer produce requests
    impression_linger_ms: Weight = 20.0
    # the feed API's topic follower: a fetch waits this long for a batch to fill (broker CPU
    # vs. how soon replicas see each other's impressions and the flows' updates)
    follow_wait_ms: Size = 100
    max_batch_events: Count = 500
    max_body_bytes: Count = 1_048_576
    # Who may call the API (api.security): comma-separated bearer keys, from the environment
    # only. A class left empty answers loopback callers only.
    app_keys: str = dataclasses.field(default="", repr=False)  # events, items, feeds
    admin_keys: str = dataclasses.field(default="", repr=False)  # erasure, take-downs, metrics
    # Per-user tokens (api.tokens): JWTs from the app's own login service, signed with a shared
    # secret (HS256, 32 bytes or more) or with keys published at a JWKS URL (RS256, ES256). Set,
    # events and feeds need a token whose subject is the user (or an admin key).
    jwt_secret: str = dataclasses.field(default="", repr=False)
    jwks_url: str = ""
    jwt_issuer: str = ""  # the `iss` every token must carry (required with tokens)
    jwt_audience: str = ""  # the `aud` every token must carry (required with tokens)
    jwt_leeway_s: Size = 30  # clock skew allowed on exp and nbf
    jwks_refresh_s: Seconds = 300.0  # how often the JWKS is fetched again (and on an unknown kid)
    rate_limit_per_s: Size = 5000  # requests per second per key (per address without one); 0: off
    cors_origins: str = ""  # comma-separated origins a browser may call from; empty: no CORS
    # Feed
    feed_default_n: Count = 20
    feed_max_n: Count = 100
    candidates: Count = 10_000
    rank_slice: Count = 500
    # feeds built at once; more wait their turn; 0: two per core (threads waiting to get the
    # GIL back after faiss or numpy leave a core idle: one per core gave 8 % fewer feeds/s at
    # 200,000 items, the same at 1,000,000; bench/RESULTS.md)
    feed_concurrency: Size = 0
    ann_oversample: Annotated[float, msgspec.Meta(ge=1)] = (
        6.0  # vectors scanned per ANN result (recall/cost: bench/RESULTS.md)
    )
    # co-visitation (models.covisit): a watched video pairs with the user's last `window`, each
    # step back `gap_decay` times less; a feed asks about the user's last `query`, each older one
    # `query_decay` times less, divided by both items' plays to the power `popularity`. Chosen on
    # the MovieLens replay's validation split (sim.tuning; bench/RESULTS.md)
    covisit_window: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10
    covisit_gap_decay: Share = 0.9
    covisit_popularity: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.3
    covisit_query: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10
    covisit_query_decay: Share = 0.7
    covisit_weight: Weight = 3.0  # of the co-visitation score (0-1) in the feed's pre-rank
    # Flows
    # the cluster shape of `swipeloop flows run` (Bytewax): processes of one flow, this one's
    # index, their host:port addresses (";"-separated, the same list for all), worker threads
    # in each process
    flow_processes: Count = 1
    flow_process_id: Size = 0
    flow_addresses: str = ""
    flow_workers: Count = 1
    flow_batch_size: Count = 1000
    flow_idle_s: Weight = 0.02  # how long a source partition sleeps when a poll found nothing
    # how often flow state and offsets are snapshotted (recovery): a snapshot waits for the
    # rows it covers to be in ClickHouse, so shorter epochs cost throughput (bench/RESULTS.md)
    flow_epoch_s: Seconds = 5.0
    flow_flush_s: Seconds = 0.5  # ingest inserts buffered rows at least this often ...
    flow_flush_rows: Count = 50_000  # ... or once this many are buffered (big inserts are cheap)
    dedup_window_s: Weight = 600.0  # a retried event_id within this window is stored once
    dedup_max_ids: Count = 200_000  # per source partition
    gap_metric_interval_s: Seconds = 15.0  # how often the session-gap gauges are refreshed
    metrics_port: Port = 9464  # Prometheus /metrics of `swipeloop up` and `flows run` (0: off)
    # the Prometheus that scrapes every role (compose.yaml's): the console reads the flows'
    # consumer lag and every replica's freshness there; unset, it shows this process's own
    prometheus_url: str = ""
    flow_api_port: Port = 0  # `flows run`: Bytewax's dataflow API server (/dataflow, /metrics)
    feature_lateness_s: Size = 10  # an event older than its partition's newest minus this is late
    feature_emit_s: Seconds = 0.5  # how often live windows that changed are published
    feature_shards: Count = 8  # phase-two shards (spread over the workers)
    feature_batch_size: Count = 10_000  # events per poll (bigger polls: less cost per event)
    feature_idle_s: Seconds = 5.0  # a partition silent this long no longer holds windows open
    embedding_dim: Count = 64
    embedding_lr: Annotated[float, msgspec.Meta(gt=0)] = 0.1
    embedding_negatives: Size = 3  # label-0 items drawn per positive
    embedding_uniform_negatives: Share = 1.0  # share of them drawn uniformly (rest: impressions)
    embedding_min_count: Count = 5  # sightings before an id gets a vector of its own
    embedding_ttl_s: Count = 7 * 86_400  # event seconds unseen before an id's vector expires
    embedding_fp16: bool = False  # store vectors as float16 (half the memory)
    embedding_batch_size: Count = 5000  # events per poll of the embeddings flow
    # the single learner's merge of its topics (models.ordering): a partition caught up and
    # quiet this long stops holding it back; a partial batch is learned when every one is,
    # or once its first swipe has waited `embedding_batch_wait_s`
    embedding_hold_s: Seconds = 0.25
    embedding_batch_wait_s: Seconds = 0.1
    # shards of each side of the table (dataflows.embeddings); 0: one per worker of the flow's
    # cluster. A snapshot holds its count: a new count learns on from the vectors in ClickHouse
    embedding_shards: Size = 0
    explore_every: Size = 10  # every n-th feed slot explores the fresh pool (0: never)
    publish_interval_s: Seconds = 1.0  # how often changed vectors are published
    # how long raw events and impressions are kept (a ClickHouse TTL, swipeloop.retention);
    # 0: for ever
    retention_days: Size = 90
    # Trainer
    train_cron: str = "0 3 * * *"
    label_window_s: Count = 3600
    # the impressions the nightly training reads: the last this many days (its cost stays the
    # same however old the install is); at most `retention_days`
    training_window_days: Count = 14
    # a new model serves only if its holdout NDCG@10 beats production's by at least this
    promote_margin: float = 0.0
    # canary promotion (training.canary): a model that passed the offline gate first ranks
    # this share of users' feeds (percent; 0: promoted at once); it is promoted once each side
    # has `canary_sessions` sessions and its watch per session is at least production's times
    # (1 - `canary_margin`), else dropped; judged every `canary_check_s`
    canary_share: Annotated[int, msgspec.Meta(ge=0, le=50)] = 0
    canary_sessions: Count = 200
    canary_margin: Share = 0.05
    canary_check_s: Seconds = 60.0
    model_poll_s: Seconds = 2.0
    # Demo
    seed_items: Size = 5000

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.train_cron):
            raise SettingsError(f"{PREFIX}TRAIN_CRON={self.train_cron!r}: expected a cron line")
        if self.retention_days and self.training_window_days > self.retention_days:
            raise SettingsError(
                f"{PREFIX}TRAINING_WINDOW_DAYS={self.training_window_days}: expected at most "
                f"{PREFIX}RETENTION_DAYS ({self.retention_days}; 0 keeps events for ever)"
            )
        if self.feed_default_n > self.feed_max_n:
            raise SettingsError(
                f"{PREFIX}FEED_DEFAULT_N={self.feed_default_n}: expected at most "
                f"{PREFIX}FEED_MAX_N ({self.feed_max_n})"
            )
        self._check_tokens()
        self._check_flow_cluster()
        if self.prometheus_url and urlsplit(self.prometheus_url).scheme not in ("http", "https"):
            raise SettingsError(
                f"{PREFIX}PROMETHEUS_URL={self.prometheus_url!r}: expected an http(s) URL"
            )

    def _check_flow_cluster(self) -> None:
        if self.flow_process_id >= self.flow_processes:
            raise SettingsError(
                f"{PREFIX}FLOW_PROCESS_ID={self.flow_process_id}: expected 0 to "
                f"{self.flow_processes - 1} ({PREFIX}FLOW_PROCESSES={self.flow_processes})"
            )
        addresses = self.flow_cluster_addresses
        if self.flow_processes > 1 and len(addresses) != self.flow_processes:
            raise SettingsError(
                f"{PREFIX}FLOW_ADDRESSES={self.flow_addresses!r}: expected "
                f"{self.flow_processes} host:port addresses separated by ';', one per process"
            )
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise SettingsError(
                    f"{PREFIX}FLOW_ADDRESSES={self.flow_addresses!r}: {address!r} is not host:port"
                )

    def _check_tokens(self) -> None:
        if self.jwt_secret and self.jwks_url:
            raise SettingsError(
                f"{PREFIX}JWT_SECRET and {PREFIX}JWKS_URL are both set: expected one issuer's keys"
            )
        if self.jwt_secret and len(self.jwt_secret.encode()) < 32:
            raise SettingsError(
                f"{PREFIX}JWT_SECRET: expected at least 32 bytes (HS256 with a shorter secret "
                "can be brute-forced)"
            )
        if self.jwks_url and urlsplit(self.jwks_url).scheme not in ("http", "https"):
            raise SettingsError(f"{PREFIX}JWKS_URL={self.jwks_url!r}: expected an http(s) URL")
        for name in ("jwt_issuer", "jwt_audience"):
            if self.tokens and not getattr(self, name):
                raise SettingsError(
                    f"{PREFIX}{name.upper()} is not set: expected the value every token carries "
                    "(tokens are on)"
                )

    @property
    def embedded_broker(self) -> bool:
        """True when this process must spawn its own broker."""
        return self.kafka_bootstrap is None

    @property
    def flow_cluster_addresses(self) -> list[str]:
        """The flow cluster's process addresses, in process-id order ([] for one process)."""
        return [a.strip() for a in self.flow_addresses.split(";") if a.strip()]

    @property
    def replication(self) -> tuple[int, int]:
        """(replication factor, min.insync.replicas) of new topics."""
        default = (1, 1) if self.embedded_broker or self.broker_epoch else (3, 2)
        return (self.topic_replicas or default[0], self.topic_min_insync or default[1])

    @property
    def tokens(self) -> bool:
        """True when events and feeds need a per-user token (a JWT issuer is configured)."""
        return bool(self.jwt_secret or self.jwks_url)

    @property
    def clickhouse_dsn(self) -> str:
        """The clickhouse-connect DSN: the server URL, or chdb on the local data directory."""
        if self.clickhouse_url and self.clickhouse_user:
            url = urlsplit(self.clickhouse_url)
            login = quote(self.clickhouse_user, safe="")
            if self.clickhouse_password:
                login += ":" + quote(self.clickhouse_password, safe="")
            return urlunsplit(url._replace(netloc=f"{login}@{url.netloc.rpartition('@')[2]}"))
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def models_dir(self) -> Path:
        """Where versioned model artefacts are written and read."""
        return self.data_dir / "models"

    def bearer(self, route: Route = "app") -> dict[str, str]:
        """The header a server-side client of this API sends for a kind of route: the first
        admin key for "admin"; for "app" (items) the first app key, else admin; for "user"
        (events, feeds of any user: replays, loads) the same, but only an admin key once
        tokens are on. None when no such key is set (the loopback default)."""
        keys = keys_of(self.admin_keys)
        if route == "app" or (route == "user" and not self.tokens):
            keys = keys_of(self.app_keys) + keys
        return {"Authorization": f"Bearer {keys[0]}"} if keys else {}

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (e.g. the bootstrap of a broker just spawned)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every field from SWIPELOOP_<FIELD_NAME> (unset or empty: the default). A
        variable that is no setting, or a value that is not what its setting takes, is a
        `SettingsError` naming it: a typo must not pass for the default."""
        env = os.environ if env is None else env
        fields = {PREFIX + f.name.upper(): f.name for f in dataclasses.fields(cls)}
        fields.pop(PREFIX + "KAFKA_CONFIG")  # (filled from the SWIPELOOP_KAFKA_* left over)
        kafka = {
            name.removeprefix(KAFKA_PREFIX).lower().replace("_", "."): value
            for name, value in env.items()
            if name.startswith(KAFKA_PREFIX) and name not in fields and value
        }
        for name in sorted(env):
            if name.startswith(KAFKA_PREFIX) and name not in fields:
                close = difflib.get_close_matches(name, fields, n=1, cutoff=0.9)
                if close:  # (SWIPELOOP_KAFKA_BOOTSTRAPP is a typo, not a librdkafka setting)
                    raise SettingsError(
                        f"{name} is not a swipeloop setting (did you mean {close[0]}?)"
                    )
            elif name.startswith(PREFIX) and name not in fields:
                close = difflib.get_close_matches(name, fields, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise SettingsError(f"{name} is not a swipeloop setting{hint}")
        raw: dict[str, Any] = {
            fields[name]: value for name, value in env.items() if name in fields and value
        }
        if kafka:
            raw["kafka_config"] = kafka
        try:
            return msgspec.convert(raw, cls, strict=False, dec_hook=_decode)
        except msgspec.ValidationError as exc:
            raise SettingsError(_explain(str(exc), raw)) from None


def keys_of(raw: str) -> list[str]:
    """The keys of a comma-separated key setting (blanks dropped)."""
    return [k.strip() for k in raw.split(",") if k.strip()]


def _decode(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(kind)


def _explain(message: str, raw: Mapping[str, str]) -> str:
    """msgspec's "Expected `int` >= 1 - at `$.topic_partitions`" as the variable and its value."""
    found = re.fullmatch(r"(.*) - at `\$\.(\w+)`", message)
    if not found:
        return message  # __post_init__'s own, which names its variable
    expected, field = found.groups()
    choices = get_args(get_type_hints(Settings, include_extras=True)[field])
    if expected.startswith("Invalid enum value"):
        expected = "one of " + ", ".join(map(str, choices))
    else:
        expected = expected.removeprefix("Expected ").replace("`", "")
        expected = re.sub(r", got \w+$", "", expected)
        for kind, words in _KINDS.items():
            expected = re.sub(rf"^{kind}\b", words, expected)
    return f"{PREFIX}{field.upper()}={raw.get(field, '')!r}: expected {expected}"


_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false (1 or 0)"}
