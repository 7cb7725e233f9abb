-- Online item vectors; the highest version per item is the current one.
CREATE TABLE IF NOT EXISTS item_embeddings
(
    item_id    String,
    version    UInt64,
    updated_at DateTime64(3, 'UTC'),
    vector     Array(Float32)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY item_id
SETTINGS non_replicated_deduplication_window = 10000;

-- down
DROP TABLE IF EXISTS item_embeddings;
