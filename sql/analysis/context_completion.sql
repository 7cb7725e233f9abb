-- How people watch by the phone's context in the last hours: per network type, device class and
-- video length class (the ranker's context_completion feature counts network x length class;
-- models.features.context), the plays that carried a context, their users, completion per play
-- with its 95 % interval (mean ± 1.96 standard errors), the early-skip rate (a play under
-- 2 s, or under 10 % of a video shorter than 20 s) and the median measured bandwidth.
-- param: hours UInt32 = 24  plays of the last hours
SELECT
    e.context.network                                                   AS network,
    if(e.context.device_class = '', 'unknown', e.context.device_class) AS device_class,
    multiIf(i.duration_ms < 15000, '< 15 s', i.duration_ms < 30000, '15-30 s',
            i.duration_ms < 60000, '30-60 s', i.duration_ms < 180000, '1-3 min',
            '>= 3 min')                                                 AS length_class,
    count()                                                             AS plays,
    uniqExact(e.user_id)                                                AS users,
    round(avg(least(e.watch_ms / i.duration_ms, 1)), 4)                 AS completion,
    round(1.96 * stddevSamp(least(e.watch_ms / i.duration_ms, 1)) / sqrt(count()), 4)
                                                                        AS completion_ci95,
    round(avg(e.watch_ms < least(2000, if(i.duration_ms < 20000, i.duration_ms / 10, 2000))), 4)
                                                                        AS early_skip_rate,
    quantileExactIf(0.5)(e.context.bandwidth_kbps, e.context.bandwidth_kbps > 0)
                                                                        AS median_kbps
FROM events AS e
INNER JOIN (SELECT item_id, duration_ms FROM items FINAL WHERE duration_ms > 0) AS i
    ON i.item_id = e.item_id
WHERE e.client_ts >= now64(3) - toIntervalHour({hours:UInt32})
  AND e.kind IN ('watch', 'skip')
  AND e.context.network != ''
GROUP BY network, device_class, length_class
ORDER BY network, device_class, min(i.duration_ms)
