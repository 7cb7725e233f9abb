-- The skew check's input: a sample of served impressions, each with its item's engagement
-- recomputed from the raw events as of the moment it was served. One row per (impression,
-- ranker window): window w is {lengths}[w] seconds sliding by {hops}[w] (models.features
-- RANK_WINDOWS, with the flow's hops), and serving reads the live one, [end - length, end)
-- with `end` the hop boundary after served_at; only events that happened before served_at
-- count, and not late ones (the flow leaves those out). Counters as in engagement_windows.sql.
-- The sample is a fixed hash of (request, item), so two runs on the same data agree.
WITH sample AS
(
    SELECT request_id, item_id, served_at, features
    FROM impressions FINAL
    WHERE length(features) = {n_features:UInt32}
    ORDER BY cityHash64(request_id, item_id)
    LIMIT {sample:UInt32}
)
SELECT
    request_id,
    item_id,
    w                                                               AS window,
    any(served)                                                     AS served_at,
    any(logged)                                                     AS features,
    any(created)                                                    AS created_at,
    any(duration)                                                   AS duration_ms,
    countIf(inside AND k = 'impression')                            AS impressions,
    countIf(inside AND play)                                        AS plays,
    sumIf(ms, inside AND play)                                      AS watch_ms,
    sumIf(least(ms / duration, 1), inside AND play AND duration > 0)
        + countIf(inside AND k = 'loop')                            AS completion,
    countIf(inside AND play AND ms < if(duration > 0, least(2000, 0.1 * duration), 2000))
                                                                    AS early_skips,
    countIf(inside AND k = 'skip')                                  AS skips,
    countIf(inside AND k = 'loop')                                  AS loops,
    countIf(inside AND k = 'like')                                  AS likes,
    countIf(inside AND k = 'share')                                 AS shares,
    countIf(inside AND k = 'comment')                               AS comments,
    countIf(inside AND k = 'follow')                                AS follows,
    countIf(inside AND k = 'not_interested')                        AS not_interested,
    countIf(inside AND k = 'block')                                 AS blocks,
    countIf(inside)                                                 AS events
FROM
(
    SELECT
        s.request_id AS request_id,
        s.item_id    AS item_id,
        s.served_at  AS served,
        s.features   AS logged,
        w,
        e.kind       AS k,
        e.kind IN ('watch', 'skip') AS play,
        e.watch_ms   AS ms,
        it.duration_ms AS duration,
        it.created_at AS created,
        {hops:Array(UInt32)}[w] AS hop,
        (intDiv(toUnixTimestamp(s.served_at), hop) + 1) * hop AS window_end,
        e.kind != ''
            AND e.client_ts < s.served_at
            AND toUnixTimestamp(e.client_ts) >= window_end - {lengths:Array(UInt32)}[w]
            AND toUnixTimestamp(e.client_ts) < window_end AS inside
    FROM sample AS s
    ARRAY JOIN arrayEnumerate({lengths:Array(UInt32)}) AS w
    LEFT JOIN
    (
        SELECT item_id, kind, watch_ms, client_ts
        FROM events FINAL
        WHERE item_id IN (SELECT item_id FROM sample)
            AND event_id NOT IN (SELECT event_id FROM late_events)
    ) AS e ON e.item_id = s.item_id
    LEFT JOIN (SELECT item_id, duration_ms, created_at FROM items FINAL) AS it
        ON it.item_id = s.item_id
)
GROUP BY request_id, item_id, window
ORDER BY request_id, item_id, window
