-- Engagement windows recomputed from the raw events: the golden check of dataflows/features.py
-- (and a way to backfill). One row per (level, entity, window_end) for the windows of
-- {window_s} seconds sliding by {hop_s}: [window_end - window_s, window_end). Late events (in
-- `late_events`) are left out, as the flow leaves them out. The counters follow
-- models/features.py: a play is a watch or skip event; completion is min(watch/duration, 1)
-- per play (on the flow's grid of 2^-20, `on_grid`) plus one per loop; an early skip is a
-- play shorter than min(2 s, 10 % of the duration), or 2 s when the duration is unknown.
-- param: window_s UInt32  the windows' length in seconds (e.g. 3600)
-- param: hop_s UInt32  how far they slide in seconds (e.g. 60)
SELECT
    level,
    entity,
    toDateTime(end_s, 'UTC') AS window_end,
    countIf(k = 'impression')                                        AS impressions,
    countIf(play)                                                       AS plays,
    sumIf(ms, play)                                               AS watch_ms,
    sumIf(round(least(ms / duration, 1) * 1048576) / 1048576, play AND duration > 0)
        + countIf(k = 'loop')                                        AS completion,
    countIf(play AND ms < if(duration > 0, least(2000, 0.1 * duration), 2000))
                                                                        AS early_skips,
    countIf(k = 'skip')                                              AS skips,
    countIf(k = 'loop')                                              AS loops,
    countIf(k = 'like')                                              AS likes,
    countIf(k = 'share')                                             AS shares,
    countIf(k = 'comment')                                           AS comments,
    countIf(k = 'follow')                                            AS follows,
    countIf(k = 'not_interested')                                    AS not_interested,
    countIf(k = 'block')                                             AS blocks,
    count()                                                             AS events
FROM
(
    SELECT
        e.kind                                        AS k,
        e.kind IN ('watch', 'skip')                   AS play,
        e.watch_ms                                    AS ms,
        i.duration_ms                                 AS duration,
        toUnixTimestamp(e.client_ts)                  AS second,
        arrayJoin(arrayFilter(
            x -> x.2 != '',
            [('item', e.item_id), ('creator', i.creator_id), ('user', e.user_id)]
        ))                                            AS level_entity,
        level_entity.1                                AS level,
        level_entity.2                                AS entity,
        arrayJoin(range(
            intDiv(second, {hop_s:UInt32}) * {hop_s:UInt32} + {hop_s:UInt32},
            intDiv(second, {hop_s:UInt32}) * {hop_s:UInt32} + {hop_s:UInt32} + {window_s:UInt32},
            {hop_s:UInt32}
        ))                                            AS end_s
    FROM events AS e FINAL
    LEFT JOIN (SELECT item_id, creator_id, duration_ms FROM items FINAL) AS i
        ON i.item_id = e.item_id
    WHERE e.event_id NOT IN (SELECT event_id FROM late_events)
)
GROUP BY level, entity, end_s
ORDER BY level, entity, end_s
