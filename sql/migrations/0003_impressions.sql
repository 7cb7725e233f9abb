-- What each feed served, with the exact features the ranker saw (the training rows).
CREATE TABLE IF NOT EXISTS impressions
(
    request_id    String,
    user_id       String,
    item_id       String,
    position      UInt16,
    source        LowCardinality(String),
    model_version LowCardinality(String),
    score         Float32,
    features      Array(Float32),
    served_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(served_at)
ORDER BY (user_id, request_id, item_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- down
DROP TABLE IF EXISTS impressions;
