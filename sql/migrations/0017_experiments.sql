-- Online experiments (api.experiments): each a name, its arms (a feed policy each) and their
-- shares of users, when it started and stopped; a stop is a newer row of the same name.
CREATE TABLE IF NOT EXISTS experiments
(
    name        String,
    updated_at  DateTime64(6, 'UTC') DEFAULT now64(6),
    arms        Array(String),
    shares      Array(UInt8),
    started_at  DateTime64(3, 'UTC'),
    stopped_at  Nullable(DateTime64(3, 'UTC'))
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY name;

-- Every impression served under an experiment says which one and which arm.
ALTER TABLE impressions ADD COLUMN IF NOT EXISTS experiment LowCardinality(String) DEFAULT '';
ALTER TABLE impressions ADD COLUMN IF NOT EXISTS arm LowCardinality(String) DEFAULT '';

-- down
ALTER TABLE impressions DROP COLUMN IF EXISTS arm;
ALTER TABLE impressions DROP COLUMN IF EXISTS experiment;
DROP TABLE IF EXISTS experiments;
