-- One training row per served impression: the features exactly as served (point in time),
-- graded by the engagement that followed within the label window, and only that:
--   relevance 3  liked, shared, commented or followed
--             2  looped, or watched >= 80 % of the video (length-corrected)
--             1  watched >= 50 %
--             0  less (an early skip), or marked not interested (whatever else happened)
--   label        relevance >= 2 (for AUC)
--   watch_s      seconds watched, capped at the video's length
-- An impression with no outcome event at all (no watch, skip, like, ...) is left out: its
-- events may have been lost on the way, and a lost watch must never be read as a skip. In a
-- session with lost packets (`session_gaps`) what arrived is only a lower bound (the lost one
-- may have been a like): such an impression is kept only when nothing lost could change its
-- grade, i.e. it is a 3, or marked not interested. Rows of one request are consecutive (one
-- served_at per request), oldest first. Only impressions served since `since` are read (the
-- training window), and only the events that can grade them.
SELECT
    request_id,
    served_at,
    any(features)                                                        AS features,
    maxIf(kind IN ('like', 'share', 'comment', 'follow'), in_window)     AS engaged,
    maxIf(kind = 'loop' OR (kind = 'watch' AND duration_ms > 0 AND watch_ms >= 0.8 * duration_ms),
          in_window)                                                     AS completed,
    maxIf(kind = 'watch' AND duration_ms > 0 AND watch_ms >= 0.5 * duration_ms, in_window) AS half,
    maxIf(kind = 'not_interested', in_window)                            AS rejected,
    toUInt8(if(rejected, 0, greatest(3 * engaged, 2 * completed, half))) AS relevance,
    toUInt8(relevance >= 2)                                              AS label,
    toFloat32(if(any(duration_ms) > 0,
                 least(maxIf(watch_ms, kind = 'watch' AND in_window), any(duration_ms)),
                 maxIf(watch_ms, kind = 'watch' AND in_window)) / 1000)  AS watch_s
FROM
(
    SELECT
        i.request_id AS request_id,
        i.item_id    AS item_id,
        i.served_at  AS served_at,
        i.features   AS features,
        e.kind       AS kind,
        e.watch_ms   AS watch_ms,
        it.duration_ms AS duration_ms,
        e.gapped     AS gapped,
        e.kind != ''
            AND e.client_ts >= i.served_at - INTERVAL 1 SECOND
            AND e.client_ts < i.served_at + toIntervalSecond({label_window_s:UInt32}) AS in_window
    FROM impressions AS i FINAL
    LEFT JOIN
    (
        SELECT
            user_id,
            item_id,
            kind,
            watch_ms,
            client_ts,
            (user_id, session_id) IN (SELECT user_id, session_id FROM session_gaps) AS gapped
        FROM events FINAL
        WHERE kind != 'impression' AND client_ts >= {since:DateTime64(3)} - INTERVAL 1 SECOND
    ) AS e ON e.user_id = i.user_id AND e.item_id = i.item_id
    LEFT JOIN (SELECT item_id, duration_ms FROM items FINAL) AS it ON it.item_id = i.item_id
    WHERE length(i.features) = {n_features:UInt32} AND i.served_at >= {since:DateTime64(3)}
)
GROUP BY request_id, item_id, served_at
HAVING countIf(in_window) > 0 AND (NOT maxIf(gapped, in_window) OR relevance = 3 OR rejected)
ORDER BY served_at, request_id
