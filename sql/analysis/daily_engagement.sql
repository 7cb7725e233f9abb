-- Daily engagement: people, sessions, plays, watch time, completion, early-skip, like and
-- share rates per day (UTC, the phone's clock), for the last days.
-- param: days UInt32 = 7  how many days back from today
SELECT
    toDate(e.client_ts)                                             AS day,
    uniqExact(e.user_id)                                            AS people,
    uniqExact(e.user_id, e.session_id)                              AS sessions,
    countIf(e.kind IN ('watch', 'skip'))                            AS plays,
    round(sumIf(e.watch_ms, e.kind IN ('watch', 'skip')) / 3.6e6, 2) AS watch_hours,
    round(watch_hours * 60 / nullIf(sessions, 0), 2)                AS watch_min_per_session,
    round(avgIf(least(e.watch_ms / i.duration_ms, 1),
                e.kind IN ('watch', 'skip') AND i.duration_ms > 0), 3) AS completion,
    round(countIf(e.kind IN ('watch', 'skip') AND e.watch_ms
          < if(i.duration_ms > 0, least(2000, 0.1 * i.duration_ms), 2000)) / nullIf(plays, 0), 3)
                                                                    AS early_skip_rate,
    round(countIf(e.kind = 'like') / nullIf(plays, 0), 4)           AS like_rate,
    round(countIf(e.kind = 'share') / nullIf(plays, 0), 4)          AS share_rate
FROM events AS e FINAL
LEFT JOIN (SELECT item_id, duration_ms FROM items FINAL) AS i ON i.item_id = e.item_id
WHERE e.client_ts >= today() - {days:UInt32}
GROUP BY day
ORDER BY day
