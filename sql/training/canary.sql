-- A canary against production, live: for each of the two versions, the sessions of the
-- impressions it ranked since the canary started (real-time feeds only: the baselines log
-- their name as the source), their mean watch seconds and its standard deviation, and the
-- early-skip rate of their plays. Events reach an impression by the feed's request_id.
WITH
    served AS
    (
        SELECT request_id, item_id, model_version
        FROM impressions
        WHERE served_at >= {since:DateTime64(3)}
          AND model_version IN ({canary:String}, {production:String})
          AND source NOT IN ('batch', 'popularity', 'random')
    ),
    acted AS
    (
        SELECT
            s.model_version AS version,
            e.user_id AS user_id,
            e.session_id AS session_id,
            e.kind IN ('watch', 'skip') AS play,
            e.watch_ms AS watch_ms,
            e.watch_ms < if(i.duration_ms > 0, least(2000, 0.1 * i.duration_ms), 2000) AS early
        FROM events AS e
        INNER JOIN served AS s ON s.request_id = e.request_id AND s.item_id = e.item_id
        LEFT JOIN (SELECT item_id, duration_ms FROM items FINAL) AS i ON i.item_id = e.item_id
    ),
    sessions AS
    (
        SELECT version, sumIf(watch_ms, play) / 1000 AS watch_s
        FROM acted
        GROUP BY version, user_id, session_id
    )
SELECT
    s.version                AS version,
    count()                  AS sessions,
    avg(s.watch_s)           AS watch_s,
    stddevSamp(s.watch_s)    AS watch_sd,
    any(p.early_rate)        AS early_skip_rate
FROM sessions AS s
LEFT JOIN
(
    SELECT version, countIf(play AND early) / nullIf(countIf(play), 0) AS early_rate
    FROM acted
    GROUP BY version
) AS p ON p.version = s.version
GROUP BY s.version
