"""Prometheus metrics of the flows (one registry per process; `serve_metrics` exposes it)."""

from __future__ import annotations

import logging
import threading
import time

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from swipeloop.clickhouse import connect
from swipeloop.settings import Settings

log = logging.getLogger(__name__)

INGESTED_ROWS = Counter(
    "swipeloop_ingest_rows", "Rows the ingest flow inserted into ClickHouse", ["table"]
)
DEAD_LETTERS = Counter(
    "swipeloop_ingest_dead_letters", "Messages refused to the DLQ, by source topic", ["topic"]
)
DUPLICATES_DROPPED = Counter(
    "swipeloop_ingest_duplicates_dropped", "Events dropped as repeats of an accepted event_id"
)
LATE_EVENTS = Counter(
    "swipeloop_late_events",
    "Events older than their partition's watermark: in the late_events table, in no window",
)
FEATURE_EVENTS = Counter(
    "swipeloop_feature_events", "Events counted into the feature windows (late ones excluded)"
)
FEATURE_STATE_BYTES = Gauge(
    "swipeloop_feature_state_bytes", "Memory held by one shard's windows", ["shard"]
)
WINDOW_DROPPED = Counter(
    "swipeloop_window_dropped_events",
    "Rows older than every bucket a window keeps, and emitted windows a late row could no "
    "longer correct (partitions skewed beyond the slack)",
)
EMBEDDING_EVENTS = Counter(
    "swipeloop_embedding_events", "Events the embeddings flow has learned from (all kinds)"
)
EMBEDDING_UPDATES = Counter(
    "swipeloop_embedding_updates", "SGD steps on (user, item / creator / tag) pairs, negatives too"
)
EMBEDDING_IDS = Gauge("swipeloop_embedding_ids", "Ids with a vector of their own", ["kind"])
EMBEDDING_STATE_BYTES = Gauge(
    "swipeloop_embedding_state_bytes", "Memory of the embedding tables, filter and reservoir"
)
EMBEDDING_EXPIRED = Counter(
    "swipeloop_embedding_expired", "Ids whose vectors expired (idle past the TTL)", ["kind"]
)
FEED_CANDIDATES = Counter(
    "swipeloop_feed_candidates", "Candidates retrieved for feeds, by source", ["source"]
)
FEED_DROPS = Counter(
    "swipeloop_feed_dropped", "Candidates filtered out of feeds, by reason", ["reason"]
)
FEED_STAGE_SECONDS = Histogram(
    "swipeloop_feed_stage_seconds",
    "Time per stage of GET /v1/feed",
    ["stage"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
FRESHNESS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
FEATURE_LAG = Histogram(
    "swipeloop_feature_lag_seconds",
    "Event time an item's features count up to, to their arrival in this API's cache",
    buckets=FRESHNESS_BUCKETS,
)
VECTOR_LAG = Histogram(
    "swipeloop_vector_lag_seconds",
    "A vector's publication by the embeddings flow to its arrival in this API's index",
    ["kind"],
    buckets=FRESHNESS_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "swipeloop_consumer_lag",
    "Messages a flow's source has yet to read, per topic partition (as of its last poll)",
    ["step", "topic", "partition"],
)
MODEL_SERVING = Gauge(
    "swipeloop_model_serving", "1 for the model version this API process ranks with", ["version"]
)
MODEL_CHANGES = Counter(
    "swipeloop_model_changes",
    "Model versions this API process switched to, by the registry action that made them serve",
    ["action"],
)
SESSION_GAP_EVENTS = Gauge(
    "swipeloop_session_gap_events",
    "Events missing (seq gaps) in sessions active in the last hour",
)
SESSIONS_WITH_GAPS = Gauge(
    "swipeloop_sessions_with_gaps", "Sessions active in the last hour with at least one gap"
)

# Sessions seen in the last hour, and how many of their seq numbers never arrived.
_GAPS_SQL = """
SELECT countIf(missing > 0), sum(missing)
FROM
(
    SELECT toInt64(bitmapMax(s)) + 1 - toInt64(bitmapCardinality(s)) AS missing
    FROM
    (
        SELECT groupBitmapMergeState(seqs) AS s, max(last_at) AS last
        FROM session_seqs
        GROUP BY user_id, session_id
        HAVING last > now64(3) - INTERVAL 1 HOUR
    )
)
"""


def refresh_session_gaps(client: Client) -> tuple[int, int]:
    """Set the session-gap gauges from ClickHouse; return (sessions with gaps, missing)."""
    sessions, missing = client.query(_GAPS_SQL).result_rows[0]
    SESSIONS_WITH_GAPS.set(int(sessions))
    SESSION_GAP_EVENTS.set(int(missing or 0))
    return int(sessions), int(missing or 0)


def serve_metrics(settings: Settings, session_gaps: bool) -> None:
    """Expose this process's metrics on api_host:metrics_port/metrics (0: don't; like the
    API, loopback unless told otherwise); with `session_gaps`, a background thread refreshes
    the gap gauges every `gap_metric_interval_s`."""
    if not settings.metrics_port:
        return
    start_http_server(settings.metrics_port, addr=settings.api_host)
    log.info("metrics on %s:%d/metrics", settings.api_host, settings.metrics_port)
    if session_gaps:
        threading.Thread(
            target=_refresh_gaps_forever, args=(settings,), name="gap-metric", daemon=True
        ).start()


def _refresh_gaps_forever(settings: Settings) -> None:
    client = connect(settings)
    while True:
        try:
            refresh_session_gaps(client)
        except (OperationalError, DatabaseError) as exc:  # ClickHouse away: try again later
            log.warning("cannot refresh the session-gap metric: %s", exc)
        time.sleep(settings.gap_metric_interval_s)
