-- Messages a flow refused, with the reason and the original bytes.
CREATE TABLE IF NOT EXISTS dlq
(
    reason    String,
    topic     LowCardinality(String),
    partition UInt16,
    offset    UInt64,
    payload   String,
    failed_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (topic, partition, offset)
SETTINGS non_replicated_deduplication_window = 10000;

-- down
DROP TABLE IF EXISTS dlq;
