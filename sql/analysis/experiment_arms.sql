-- An online experiment's arms compared (`swipeloop experiment`): per arm, its users, sessions
-- and impressions, and what people did with the impressions it served (their events carry the
-- feed's request_id): watch seconds per session, completion per play, early-skip rate and
-- likes per impression, each with its 95 % interval (mean ± 1.96 standard errors), and the
-- p-value of its difference from the control arm (the first one listed): Welch's t-test for
-- watch time and completion, a two-proportion z-test for early skips and likes.
-- param: experiment String  the experiment's name (`swipeloop experiment list`)
WITH
    (SELECT arms[1] FROM experiments FINAL WHERE name = {experiment:String}) AS control,
    served AS
    (
        SELECT request_id, item_id, user_id, arm
        FROM impressions
        WHERE experiment = {experiment:String}
    ),
    acted AS
    (
        SELECT
            s.arm AS arm,
            e.user_id AS user_id,
            e.session_id AS session_id,
            e.kind AS kind,
            e.watch_ms AS watch_ms,
            e.kind IN ('watch', 'skip') AS play,
            i.duration_ms AS duration_ms
        FROM events AS e
        INNER JOIN served AS s ON s.request_id = e.request_id AND s.item_id = e.item_id
        LEFT JOIN (SELECT item_id, duration_ms FROM items FINAL) AS i ON i.item_id = e.item_id
    ),
    sessions AS
    (
        SELECT arm, user_id, session_id, sumIf(watch_ms, play) / 1000 AS watch_s
        FROM acted
        GROUP BY arm, user_id, session_id
    ),
    plays AS
    (
        SELECT
            arm,
            if(duration_ms > 0, least(watch_ms / duration_ms, 1), NULL) AS completion,
            watch_ms < if(duration_ms > 0, least(2000, 0.1 * duration_ms), 2000) AS early
        FROM acted
        WHERE play
    ),
    per_arm AS
    (
        SELECT
            arm,
            uniqExact(user_id) AS users,
            count() AS impressions
        FROM served
        GROUP BY arm
    ),
    per_session AS
    (
        SELECT arm, count() AS n, avg(watch_s) AS mean, stddevSamp(watch_s) AS sd
        FROM sessions
        GROUP BY arm
    ),
    per_play AS
    (
        SELECT
            arm,
            count() AS plays,
            avg(completion) AS completion_mean,
            stddevSamp(completion) AS completion_sd,
            count(completion) AS timed,
            countIf(early) AS early
        FROM plays
        GROUP BY arm
    ),
    likes AS
    (
        SELECT arm, countIf(kind = 'like') AS likes FROM acted GROUP BY arm
    ),
    watch_test AS
    (
        SELECT a.arm AS arm, welchTTest(x.watch_s, toUInt8(x.arm = a.arm)).2 AS p
        FROM (SELECT DISTINCT arm FROM sessions WHERE arm != control) AS a
        CROSS JOIN sessions AS x
        WHERE x.arm IN (a.arm, control)
        GROUP BY a.arm
    ),
    completion_test AS
    (
        SELECT a.arm AS arm, welchTTest(x.completion, toUInt8(x.arm = a.arm)).2 AS p
        FROM (SELECT DISTINCT arm FROM plays WHERE arm != control) AS a
        CROSS JOIN (SELECT arm, completion FROM plays WHERE completion IS NOT NULL) AS x
        WHERE x.arm IN (a.arm, control)
        GROUP BY a.arm
    )
SELECT
    r.arm                                                          AS arm,
    r.arm = control                                                AS is_control,
    r.users                                                        AS users,
    s.n                                                            AS sessions,
    r.impressions                                                  AS impressions,
    round(s.mean, 2)                                               AS watch_s_per_session,
    round(1.96 * s.sd / sqrt(s.n), 2)                              AS watch_s_ci95,
    round(if(r.arm = control, NULL, w.p), 4)                       AS watch_p_value,
    round(p.completion_mean, 4)                                    AS completion,
    round(1.96 * p.completion_sd / sqrt(p.timed), 4)               AS completion_ci95,
    round(if(r.arm = control, NULL, ct.p), 4)                      AS completion_p_value,
    round(p.early / p.plays, 4)                                    AS early_skip_rate,
    round(1.96 * sqrt(early_skip_rate * (1 - early_skip_rate) / p.plays), 4) AS early_skip_ci95,
    round(if(r.arm = control, NULL, proportionsZTest(
        toUInt64(p.early), toUInt64(c.early), toUInt64(p.plays), toUInt64(c.plays), 0.95, 'pooled'
    ).2), 4)                                                       AS early_skip_p_value,
    round(l.likes / r.impressions, 4)                              AS likes_per_impression,
    round(1.96 * sqrt(likes_per_impression * (1 - likes_per_impression) / r.impressions), 4)
                                                                   AS likes_ci95,
    round(if(r.arm = control, NULL, proportionsZTest(
        toUInt64(l.likes), toUInt64(cl.likes), toUInt64(r.impressions), toUInt64(cr.impressions),
        0.95, 'pooled'
    ).2), 4)                                                       AS likes_p_value
FROM per_arm AS r
LEFT JOIN per_session AS s ON s.arm = r.arm
LEFT JOIN per_play AS p ON p.arm = r.arm
LEFT JOIN likes AS l ON l.arm = r.arm
LEFT JOIN watch_test AS w ON w.arm = r.arm
LEFT JOIN completion_test AS ct ON ct.arm = r.arm
LEFT JOIN (SELECT * FROM per_play WHERE arm = control) AS c ON 1 = 1
LEFT JOIN (SELECT * FROM likes WHERE arm = control) AS cl ON 1 = 1
LEFT JOIN (SELECT * FROM per_arm WHERE arm = control) AS cr ON 1 = 1
ORDER BY is_control DESC, arm
