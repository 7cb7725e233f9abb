-- Raw swipe events, one row per event_id (a retried batch collapses on merge and in FINAL).
CREATE TABLE IF NOT EXISTS events
(
    event_id    UUID,
    user_id     String,
    item_id     String,
    kind        LowCardinality(String),
    watch_ms    UInt32,
    client_ts   DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    session_id  String,
    seq         UInt32,
    request_id  String,
    topic       LowCardinality(String),
    partition   UInt16,
    offset      UInt64
)
ENGINE = ReplacingMergeTree(received_at)
PARTITION BY toYYYYMM(client_ts)
ORDER BY (user_id, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- down
DROP TABLE IF EXISTS events;
