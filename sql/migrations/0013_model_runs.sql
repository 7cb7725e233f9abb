-- One row per training run: the candidate, the production model and a popularity baseline
-- evaluated on the same time-ordered holdout, and whether the candidate was promoted.
CREATE TABLE IF NOT EXISTS model_runs
(
    run_at                   DateTime64(3, 'UTC'),
    version                  String,
    promoted                 UInt8,
    reason                   String,
    production_version       String,
    rows                     UInt64,
    holdout_rows             UInt64,
    data_from                DateTime64(3, 'UTC'),
    data_to                  DateTime64(3, 'UTC'),
    ndcg_at_10               Nullable(Float64),
    production_ndcg_at_10    Nullable(Float64),
    popularity_ndcg_at_10    Nullable(Float64),
    auc                      Nullable(Float64),
    production_auc           Nullable(Float64),
    popularity_auc           Nullable(Float64),
    watch_s_at_10            Nullable(Float64),
    production_watch_s_at_10 Nullable(Float64),
    popularity_watch_s_at_10 Nullable(Float64),
    train_s                  Float64,
    eval_s                   Float64
)
ENGINE = MergeTree
ORDER BY run_at;

-- down
DROP TABLE IF EXISTS model_runs;
