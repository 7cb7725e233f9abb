-- The cascade's scores and each slot's propensity, logged with every impression (exploration
-- slots are drawn at random: their propensity lets an evaluation reweigh them).
ALTER TABLE impressions ADD COLUMN IF NOT EXISTS prerank Float32 DEFAULT 0;
ALTER TABLE impressions ADD COLUMN IF NOT EXISTS propensity Float32 DEFAULT 1;

-- down
ALTER TABLE impressions DROP COLUMN IF EXISTS propensity;
ALTER TABLE impressions DROP COLUMN IF EXISTS prerank;
