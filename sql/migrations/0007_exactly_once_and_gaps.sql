-- Exactly-once ingest: every table the ingest flow writes records the source offset of each
-- row, so a restarted flow can skip what ClickHouse already holds.
ALTER TABLE events ADD COLUMN IF NOT EXISTS ts_clamped Bool DEFAULT false AFTER request_id;
ALTER TABLE items ADD COLUMN IF NOT EXISTS topic LowCardinality(String) DEFAULT '';
ALTER TABLE items ADD COLUMN IF NOT EXISTS partition UInt16 DEFAULT 0;
ALTER TABLE items ADD COLUMN IF NOT EXISTS offset UInt64 DEFAULT 0;
ALTER TABLE impressions ADD COLUMN IF NOT EXISTS topic LowCardinality(String) DEFAULT '';
ALTER TABLE impressions ADD COLUMN IF NOT EXISTS partition UInt16 DEFAULT 0;
ALTER TABLE impressions ADD COLUMN IF NOT EXISTS offset UInt64 DEFAULT 0;

-- Which seq numbers each session delivered (a set: a duplicate changes nothing), whatever the
-- order they arrive in and whichever topic they travelled on.
CREATE TABLE IF NOT EXISTS session_seqs
(
    user_id    String,
    session_id String,
    first_at   SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_at    SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    seqs       AggregateFunction(groupBitmap, UInt32)
)
ENGINE = AggregatingMergeTree
ORDER BY (user_id, session_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS session_seqs_mv TO session_seqs AS
SELECT
    user_id,
    session_id,
    min(received_at)       AS first_at,
    max(received_at)       AS last_at,
    groupBitmapState(seq)  AS seqs
FROM events
GROUP BY user_id, session_id;

-- Sessions with lost packets: seq runs 0, 1, 2, ... per session, so every number below the
-- highest one seen that never arrived is a gap (at most 100 listed per session).
CREATE VIEW IF NOT EXISTS session_gaps AS
SELECT
    user_id,
    session_id,
    first_at,
    last_at,
    seen,
    max_seq,
    toInt64(max_seq) + 1 - seen AS missing,
    if(
        max_seq < 100000,
        arraySlice(bitmapToArray(bitmapXor(bitmapBuild(range(toUInt32(max_seq + 1))), seqs)), 1, 100),
        []
    ) AS missing_seqs
FROM
(
    SELECT
        user_id,
        session_id,
        min(first_at)                  AS first_at,
        max(last_at)                   AS last_at,
        groupBitmapMergeState(seqs)    AS seqs,
        bitmapCardinality(seqs)        AS seen,
        bitmapMax(seqs)                AS max_seq
    FROM session_seqs
    GROUP BY user_id, session_id
)
WHERE missing > 0;

-- down
DROP VIEW IF EXISTS session_gaps;
DROP VIEW IF EXISTS session_seqs_mv;
DROP TABLE IF EXISTS session_seqs;
ALTER TABLE impressions DROP COLUMN IF EXISTS offset;
ALTER TABLE impressions DROP COLUMN IF EXISTS partition;
ALTER TABLE impressions DROP COLUMN IF EXISTS topic;
ALTER TABLE items DROP COLUMN IF EXISTS offset;
ALTER TABLE items DROP COLUMN IF EXISTS partition;
ALTER TABLE items DROP COLUMN IF EXISTS topic;
ALTER TABLE events DROP COLUMN IF EXISTS ts_clamped;
