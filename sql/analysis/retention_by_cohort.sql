-- Retention by cohort: people grouped by the day (UTC) of their first event ever, and the
-- share of each cohort active again 1, 3 and 7 days later, and on any later day.
-- param: days UInt32 = 28  cohorts whose first day is within this many days
WITH
    cohorts AS
    (
        SELECT user_id, min(toDate(client_ts)) AS cohort
        FROM events
        GROUP BY user_id
        HAVING cohort >= today() - {days:UInt32}
    ),
    activity AS
    (
        SELECT DISTINCT user_id, toDate(client_ts) AS day
        FROM events
        WHERE client_ts >= today() - {days:UInt32}
    )
SELECT
    c.cohort                                                            AS cohort,
    uniqExact(c.user_id)                                                AS people,
    round(uniqExactIf(a.user_id, a.day = c.cohort + 1) / people, 3)     AS day_1,
    round(uniqExactIf(a.user_id, a.day = c.cohort + 3) / people, 3)     AS day_3,
    round(uniqExactIf(a.user_id, a.day = c.cohort + 7) / people, 3)     AS day_7,
    round(uniqExactIf(a.user_id, a.day > c.cohort) / people, 3)         AS came_back
FROM cohorts AS c
INNER JOIN activity AS a ON a.user_id = c.user_id
GROUP BY cohort
ORDER BY cohort
