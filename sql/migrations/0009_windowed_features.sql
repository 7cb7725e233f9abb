-- Sliding-window engagement (dataflows/features.py): one row per entity, window length and
-- window end [window_end - window_s, window_end), written when the watermark closes the window.
-- A correction (an event from a lagging partition) writes the window again with a higher
-- version; a replay after a crash writes the same values again. FINAL gives the last one.
DROP TABLE IF EXISTS item_features;

CREATE TABLE IF NOT EXISTS item_features
(
    item_id        String,
    window_s       UInt32,
    window_end     DateTime('UTC'),
    impressions    Float64,
    plays          Float64,
    watch_ms       Float64,
    completion     Float64,
    early_skips    Float64,
    skips          Float64,
    loops          Float64,
    likes          Float64,
    shares         Float64,
    comments       Float64,
    follows        Float64,
    not_interested Float64,
    blocks         Float64,
    events         Float64,
    version        UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (item_id, window_s, window_end)
TTL window_end + INTERVAL 30 DAY;

CREATE TABLE IF NOT EXISTS creator_features
(
    creator_id     String,
    window_s       UInt32,
    window_end     DateTime('UTC'),
    impressions    Float64,
    plays          Float64,
    watch_ms       Float64,
    completion     Float64,
    early_skips    Float64,
    skips          Float64,
    loops          Float64,
    likes          Float64,
    shares         Float64,
    comments       Float64,
    follows        Float64,
    not_interested Float64,
    blocks         Float64,
    events         Float64,
    version        UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (creator_id, window_s, window_end)
TTL window_end + INTERVAL 30 DAY;

CREATE TABLE IF NOT EXISTS user_features
(
    user_id        String,
    window_s       UInt32,
    window_end     DateTime('UTC'),
    impressions    Float64,
    plays          Float64,
    watch_ms       Float64,
    completion     Float64,
    early_skips    Float64,
    skips          Float64,
    loops          Float64,
    likes          Float64,
    shares         Float64,
    comments       Float64,
    follows        Float64,
    not_interested Float64,
    blocks         Float64,
    events         Float64,
    version        UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (user_id, window_s, window_end)
TTL window_end + INTERVAL 30 DAY;

-- user x creator and user x tag affinity: the sum of models.features.affinity_weight.
CREATE TABLE IF NOT EXISTS user_affinity
(
    user_id     String,
    kind        LowCardinality(String),  -- 'creator' or 'tag'
    target      String,
    window_s    UInt32,
    window_end  DateTime('UTC'),
    weight      Float64,
    events      Float64,
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (user_id, kind, target, window_s, window_end)
TTL window_end + INTERVAL 30 DAY;

-- Events that arrived after the watermark of their source partition had passed them: not
-- counted in any window, recorded here (and in swipeloop_late_events_total).
CREATE TABLE IF NOT EXISTS late_events
(
    event_id     UUID,
    user_id      String,
    item_id      String,
    kind         LowCardinality(String),
    client_ts    DateTime64(3, 'UTC'),
    watermark    DateTime('UTC'),
    topic        LowCardinality(String),
    partition    UInt16,
    offset       UInt64,
    noticed_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY event_id
TTL toDateTime(client_ts) + INTERVAL 30 DAY;

-- down
DROP TABLE IF EXISTS late_events;
DROP TABLE IF EXISTS user_affinity;
DROP TABLE IF EXISTS user_features;
DROP TABLE IF EXISTS creator_features;
DROP TABLE IF EXISTS item_features;
CREATE TABLE IF NOT EXISTS item_features
(
    item_id     String,
    window_s    UInt32,
    window_end  DateTime64(3, 'UTC'),
    impressions UInt32,
    views       UInt32,
    likes       UInt32,
    completion  Float32,
    computed_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (item_id, window_s, window_end)
TTL toDateTime(window_end) + INTERVAL 30 DAY
SETTINGS non_replicated_deduplication_window = 10000;

