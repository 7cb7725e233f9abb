-- Which run of the broker a row's offset belongs to. A memory-only embedded broker restarts
-- its offsets at 0 with a new epoch; exactly-once progress is per (epoch, topic, partition).
ALTER TABLE events ADD COLUMN IF NOT EXISTS broker_epoch LowCardinality(String) DEFAULT '';
ALTER TABLE items ADD COLUMN IF NOT EXISTS broker_epoch LowCardinality(String) DEFAULT '';
ALTER TABLE impressions ADD COLUMN IF NOT EXISTS broker_epoch LowCardinality(String) DEFAULT '';
ALTER TABLE dlq ADD COLUMN IF NOT EXISTS broker_epoch LowCardinality(String) DEFAULT '';

-- down
ALTER TABLE dlq DROP COLUMN IF EXISTS broker_epoch;
ALTER TABLE impressions DROP COLUMN IF EXISTS broker_epoch;
ALTER TABLE items DROP COLUMN IF EXISTS broker_epoch;
ALTER TABLE events DROP COLUMN IF EXISTS broker_epoch;
