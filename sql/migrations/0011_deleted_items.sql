-- A deleted video stays in the catalog as its last version with deleted = true (the
-- compacted `items` topic keeps that record, so every cache that reads the topic drops it).
ALTER TABLE items ADD COLUMN IF NOT EXISTS deleted Bool DEFAULT false;

-- down
ALTER TABLE items DROP COLUMN IF EXISTS deleted;
