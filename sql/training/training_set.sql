-- One training row per served impression: the features exactly as served (point in time),
-- labelled by the engagement that followed within the label window. An impression with no
-- outcome event at all (no watch, skip, like, ...) is left out: its events may have been lost
-- on the way (see session_gaps), and a lost watch must never be read as a skip.
SELECT
    i.request_id                                    AS request_id,
    i.served_at                                     AS served_at,
    any(i.features)                                 AS features,
    maxIf(
        e.kind IN ('like', 'share', 'comment', 'follow', 'loop')
            OR (e.kind = 'watch' AND it.duration_ms > 0 AND e.watch_ms >= 0.8 * it.duration_ms),
        e.client_ts >= i.served_at - INTERVAL 1 SECOND
            AND e.client_ts < i.served_at + toIntervalSecond({label_window_s:UInt32})
    )                                               AS label
FROM impressions AS i FINAL
LEFT JOIN
(
    SELECT user_id, item_id, kind, watch_ms, client_ts
    FROM events FINAL
    WHERE kind != 'impression'
) AS e ON e.user_id = i.user_id AND e.item_id = i.item_id
LEFT JOIN (SELECT item_id, duration_ms FROM items FINAL) AS it ON it.item_id = i.item_id
WHERE length(i.features) = {n_features:UInt32}
GROUP BY request_id, i.item_id, served_at
HAVING countIf(
    e.kind != ''
        AND e.client_ts >= i.served_at - INTERVAL 1 SECOND
        AND e.client_ts < i.served_at + toIntervalSecond({label_window_s:UInt32})
) > 0
ORDER BY served_at, request_id
