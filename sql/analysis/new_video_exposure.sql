-- The exposure funnel of new videos: of the videos uploaded in the last hours, how many were
-- shown at all, played, liked, and went past their first and second exposure stages (200 and
-- 2,000 impressions: models.features.EXPOSURE_STAGES), with the median minutes from upload to
-- each step for the videos that got there.
-- param: hours UInt32 = 48  uploads of the last hours
WITH
    uploads AS
    (
        SELECT item_id, created_at
        FROM items FINAL
        WHERE created_at >= now64(3) - toIntervalHour({hours:UInt32}) AND NOT deleted
    ),
    shown AS
    (
        SELECT item_id, count() AS impressions, min(served_at) AS first_at,
               arrayElement(arraySort(groupArray(served_at)), 200) AS at_200,
               arrayElement(arraySort(groupArray(served_at)), 2000) AS at_2000
        FROM impressions
        WHERE item_id IN (SELECT item_id FROM uploads)
        GROUP BY item_id
    ),
    reactions AS
    (
        SELECT item_id,
               minIf(client_ts, kind IN ('watch', 'skip')) AS first_play,
               minIf(client_ts, kind = 'like') AS first_like,
               countIf(kind IN ('watch', 'skip')) AS plays,
               countIf(kind = 'like') AS likes
        FROM events
        WHERE item_id IN (SELECT item_id FROM uploads)
        GROUP BY item_id
    ),
    funnel AS
    (
        SELECT
            arrayJoin([
                ('1 uploaded', true, u.created_at),
                ('2 shown', s.impressions > 0, s.first_at),
                ('3 played', r.plays > 0, r.first_play),
                ('4 liked', r.likes > 0, r.first_like),
                ('5 200 impressions', s.impressions >= 200, s.at_200),
                ('6 2,000 impressions', s.impressions >= 2000, s.at_2000)
            ]) AS point,
            u.created_at AS created_at
        FROM uploads AS u
        LEFT JOIN shown AS s ON s.item_id = u.item_id
        LEFT JOIN reactions AS r ON r.item_id = u.item_id
    )
SELECT
    point.1                                                                     AS step,
    countIf(point.2)                                                            AS videos,
    round(videos / nullIf(count(), 0), 3)                                       AS share,
    round(quantileExactIf(0.5)(
        dateDiff('millisecond', created_at, point.3) / 60000, point.2), 1)      AS median_minutes
FROM funnel
GROUP BY step
ORDER BY step
