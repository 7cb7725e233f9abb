-- Canary models (training.canary): a candidate that passed the offline gate serves a share of
-- users first; it is promoted, or dropped, once its live sessions have been judged against
-- production's. A verdict is a newer row of the same version.
CREATE TABLE IF NOT EXISTS model_canaries
(
    version     String,
    updated_at  DateTime64(6, 'UTC') DEFAULT now64(6),
    production  String,
    share       UInt8,
    started_at  DateTime64(3, 'UTC'),
    state       LowCardinality(String),
    reason      String DEFAULT ''
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY version;

-- down
DROP TABLE IF EXISTS model_canaries;
