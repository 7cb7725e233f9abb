-- The catalog: the latest version of each uploaded video.
CREATE TABLE IF NOT EXISTS items
(
    item_id     String,
    creator_id  String,
    duration_ms UInt32,
    tags        Array(LowCardinality(String)),
    sound_id    String,
    created_at  DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(received_at)
ORDER BY item_id
SETTINGS non_replicated_deduplication_window = 10000;

-- down
DROP TABLE IF EXISTS items;
