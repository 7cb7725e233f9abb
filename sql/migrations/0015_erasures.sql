-- Users who asked to be forgotten (DELETE /v1/users/{id}, `swipeloop erase-user`). Every part
-- that stores or holds user data reads it: the flows' sinks drop the user's rows (and delete
-- what landed before they knew), the embeddings flow drops their vector, the feed replicas
-- their seen set and signals. An erased id stays erased.
CREATE TABLE IF NOT EXISTS erasures
(
    user_id    String,
    erased_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(erased_at)
ORDER BY user_id;

-- down
DROP TABLE IF EXISTS erasures;
