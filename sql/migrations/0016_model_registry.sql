-- The model registry where every role already connects (training.registry): each version's
-- LightGBM text, its checksum, record and training report; a pruned version is a newer row
-- with `deleted` set (inserts only, so the same statements work on every table engine).
CREATE TABLE IF NOT EXISTS model_versions
(
    version     String,
    updated_at  DateTime64(6, 'UTC') DEFAULT now64(6),
    deleted     UInt8 DEFAULT 0,
    sha256      String DEFAULT '',
    meta        String DEFAULT '' CODEC(ZSTD(3)),
    report      String DEFAULT '' CODEC(ZSTD(3)),
    model       String DEFAULT '' CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY version;

-- Every promotion and rollback, in order: the newest names the version every API serves. A
-- retried insert with the same token (two roles importing one old models directory) is dropped.
CREATE TABLE IF NOT EXISTS model_events
(
    at       DateTime64(6, 'UTC') DEFAULT now64(6),
    action   LowCardinality(String),
    version  String,
    reason   String
)
ENGINE = MergeTree
ORDER BY at
SETTINGS non_replicated_deduplication_window = 1000;

-- down
DROP TABLE IF EXISTS model_events;
DROP TABLE IF EXISTS model_versions;
