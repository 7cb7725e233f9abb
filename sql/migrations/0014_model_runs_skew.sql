-- Each nightly run's training-set query time and its skew check: the share of sampled
-- impressions whose logged features differ from their recomputation from the events.
ALTER TABLE model_runs ADD COLUMN IF NOT EXISTS query_s Float64 DEFAULT 0 AFTER holdout_rows;
ALTER TABLE model_runs ADD COLUMN IF NOT EXISTS skew_sampled UInt32 DEFAULT 0;
ALTER TABLE model_runs ADD COLUMN IF NOT EXISTS skew_mismatch_rate Nullable(Float64);

-- down
ALTER TABLE model_runs DROP COLUMN IF EXISTS skew_mismatch_rate;
ALTER TABLE model_runs DROP COLUMN IF EXISTS skew_sampled;
ALTER TABLE model_runs DROP COLUMN IF EXISTS query_s;
