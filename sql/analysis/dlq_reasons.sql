-- Why messages were refused to the dead-letter queue in the last hours: per topic and kind of
-- problem (the reason without its position), with the field it was found at, how many, when
-- first and last, and one example payload.
-- param: hours UInt32 = 24  refusals of the last hours
SELECT
    topic,
    splitByString(' - at ', reason)[1]                  AS problem,
    extract(reason, ' - at `([^`]*)`')                  AS field,
    count()                                             AS messages,
    min(failed_at)                                      AS first,
    max(failed_at)                                      AS last,
    substring(any(payload), 1, 120)                     AS example
FROM dlq
WHERE failed_at >= now64(3) - toIntervalHour({hours:UInt32})
GROUP BY topic, problem, field
ORDER BY messages DESC
