-- The phone's context with each event (swipeloop.contracts.Context): network type and its
-- measured bandwidth, country, device class, app version; empty (0) where the phone sent none.
ALTER TABLE events ADD COLUMN IF NOT EXISTS context Tuple(
    network LowCardinality(String),
    bandwidth_kbps UInt32,
    country LowCardinality(String),
    device_class LowCardinality(String),
    app_version LowCardinality(String)
);

-- down
ALTER TABLE events DROP COLUMN IF EXISTS context;
