-- User x creator and user x tag affinity recomputed from the raw events: the golden check of
-- the flow's `user_affinity` rows. One row per (kind, user, target, window_end) for the
-- windows of {window_s} seconds sliding by {hop_s}. The weight follows
-- models/features.affinity_weights: a play counts its watched fraction (an early skip -0.5),
-- an action its kind's weight; a fraction is kept on the flow's grid of
-- 2^-20 (`on_grid`). Late events are left out.
-- param: window_s UInt32  the windows' length in seconds (e.g. 3600)
-- param: hop_s UInt32  how far they slide in seconds (e.g. 60)
SELECT
    kind,
    user_id,
    target,
    toDateTime(end_s, 'UTC') AS window_end,
    sum(weight) AS weight,
    count()     AS events
FROM
(
    SELECT
        e.user_id                                     AS user_id,
        e.kind IN ('watch', 'skip')                   AS play,
        if(i.duration_ms > 0, least(2000, 0.1 * i.duration_ms), 2000) AS early_ms,
        if(
            play,
            if(e.watch_ms < early_ms, -0.5,
               round(least(e.watch_ms / if(i.duration_ms > 0, i.duration_ms, 15000), 1) * 1048576)
                   / 1048576),
            transform(
                toString(e.kind),
                ['loop', 'like', 'comment', 'share', 'follow', 'not_interested', 'block'],
                [0.5, 1.0, 1.0, 1.5, 2.0, -2.0, -3.0],
                0.0
            )
        )                                             AS weight,
        toUnixTimestamp(e.client_ts)                  AS second,
        arrayJoin(arrayConcat(
            [('creator', i.creator_id)], arrayMap(t -> ('tag', t), i.tags)
        ))                                            AS kind_target,
        kind_target.1                                 AS kind,
        kind_target.2                                 AS target,
        arrayJoin(range(
            intDiv(second, {hop_s:UInt32}) * {hop_s:UInt32} + {hop_s:UInt32},
            intDiv(second, {hop_s:UInt32}) * {hop_s:UInt32} + {hop_s:UInt32} + {window_s:UInt32},
            {hop_s:UInt32}
        ))                                            AS end_s
    FROM events AS e FINAL
    INNER JOIN (SELECT item_id, creator_id, duration_ms, tags FROM items FINAL) AS i
        ON i.item_id = e.item_id
    WHERE e.event_id NOT IN (SELECT event_id FROM late_events)
)
GROUP BY kind, user_id, target, end_s
ORDER BY kind, user_id, target, end_s
