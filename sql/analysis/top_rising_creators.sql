-- Top rising creators: plays of each creator's videos in the last minutes against the same
-- span before it (rise = (now + 1) / (before + 1)), with distinct viewers and likes now.
-- param: minutes UInt32 = 60  the span compared with the one before it
-- param: min_plays UInt32 = 10  leave out creators with fewer plays now
-- param: top UInt32 = 20  how many creators
WITH now64(3) - toIntervalMinute({minutes:UInt32}) AS since
SELECT
    i.creator_id                                                      AS creator,
    countIf(e.kind IN ('watch', 'skip') AND e.client_ts >= since)     AS plays_now,
    countIf(e.kind IN ('watch', 'skip') AND e.client_ts < since)      AS plays_before,
    round((plays_now + 1) / (plays_before + 1), 2)                    AS rise,
    uniqExactIf(e.user_id, e.client_ts >= since)                      AS viewers_now,
    countIf(e.kind = 'like' AND e.client_ts >= since)                 AS likes_now,
    uniqExactIf(e.item_id, e.client_ts >= since)                      AS videos_now
FROM events AS e FINAL
INNER JOIN (SELECT item_id, creator_id FROM items FINAL) AS i ON i.item_id = e.item_id
WHERE e.client_ts >= now64(3) - toIntervalMinute(2 * {minutes:UInt32})
    AND e.kind IN ('watch', 'skip', 'like')
GROUP BY creator
HAVING plays_now >= {min_plays:UInt32}
ORDER BY rise DESC, plays_now DESC
LIMIT {top:UInt32}
