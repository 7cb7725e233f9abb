-- Online embeddings (dataflows/embeddings.py): item and user vectors, the highest version
-- per id current. `cold`: a stand-in until the id earns its own (an item's from its
-- creator and tags, a user's from their first session). `deleted`: the id expired or was
-- erased; the current view is `FINAL WHERE deleted = 0`.
ALTER TABLE item_embeddings ADD COLUMN IF NOT EXISTS cold UInt8 DEFAULT 0;
ALTER TABLE item_embeddings ADD COLUMN IF NOT EXISTS deleted UInt8 DEFAULT 0;
CREATE TABLE IF NOT EXISTS user_embeddings
(
    user_id    String,
    version    UInt64,
    updated_at DateTime64(3, 'UTC'),
    vector     Array(Float32),
    cold       UInt8 DEFAULT 0,
    deleted    UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(version)
ORDER BY user_id
SETTINGS non_replicated_deduplication_window = 10000;

-- down
DROP TABLE IF EXISTS user_embeddings;
ALTER TABLE item_embeddings DROP COLUMN IF EXISTS deleted;
ALTER TABLE item_embeddings DROP COLUMN IF EXISTS cold;
