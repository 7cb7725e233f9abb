-- Sliding-window engagement per item; one row per (item, window length, window end).
CREATE TABLE IF NOT EXISTS item_features
(
    item_id     String,
    window_s    UInt32,
    window_end  DateTime64(3, 'UTC'),
    impressions UInt32,
    views       UInt32,
    likes       UInt32,
    completion  Float32,
    computed_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (item_id, window_s, window_end)
TTL toDateTime(window_end) + INTERVAL 30 DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- down
DROP TABLE IF EXISTS item_features;
