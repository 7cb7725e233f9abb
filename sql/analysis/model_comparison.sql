-- Model and policy A/B comparison: what the people did with the impressions each model
-- version served in the last hours, per policy arm (`GET /v1/feed?policy=`: the baselines log
-- their name as the source; everything else is the real-time feed): watch seconds, plays,
-- likes and early skips per impression, with the standard error of the watch time.
-- param: hours UInt32 = 24  impressions served in the last hours
WITH
    served AS
    (
        SELECT request_id, item_id, model_version, source
        FROM impressions
        WHERE served_at >= now64(3) - toIntervalHour({hours:UInt32})
    ),
    outcomes AS
    (
        SELECT
            request_id,
            item_id,
            sumIf(watch_ms, play) / 1000        AS watch_s,
            max(play)                           AS played,
            max(kind = 'like')                  AS liked,
            max(play AND watch_ms < early_ms)   AS early
        FROM
        (
            SELECT
                e.request_id AS request_id,
                e.item_id AS item_id,
                e.kind AS kind,
                e.watch_ms AS watch_ms,
                e.kind IN ('watch', 'skip') AS play,
                if(i.duration_ms > 0, least(2000, 0.1 * i.duration_ms), 2000) AS early_ms
            FROM events AS e
            LEFT JOIN (SELECT item_id, duration_ms FROM items FINAL) AS i ON i.item_id = e.item_id
            WHERE e.request_id IN (SELECT request_id FROM served)
        )
        GROUP BY request_id, item_id
    )
SELECT
    s.model_version                                     AS version,
    if(s.source IN ('batch', 'popularity', 'random'), s.source, 'realtime') AS arm,
    count()                                             AS impressions,
    uniqExact(s.request_id)                             AS feeds,
    round(avg(o.watch_s), 2)                            AS watch_s_per_impression,
    round(stddevSamp(o.watch_s) / sqrt(count()), 2)     AS watch_s_stderr,
    round(avg(o.played), 3)                             AS play_rate,
    round(avg(o.liked), 4)                              AS like_rate,
    round(sum(o.early) / nullIf(sum(o.played), 0), 3)   AS early_skip_rate
FROM served AS s
LEFT JOIN outcomes AS o ON o.request_id = s.request_id AND o.item_id = s.item_id
GROUP BY version, arm
ORDER BY impressions DESC
