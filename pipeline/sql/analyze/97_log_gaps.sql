-- log_gaps: where the cache log seems to be missing, so that no exposure there can be seen (summary.json
-- log_gaps, a warning on the console and at the head of the report). A request that crossed nothing and a
-- request whose cache calls were never logged look alike to every other view: this one compares the logs' volumes.
--   gap = 'hours': a run of consecutive UTC hours in each of which the application answered at least 20 requests
--     (status below 400, or none logged: a stale tab's 401 makes no cache call) and no cache call was logged at
--     all: a cache log missing for those hours, or cut short.
--   gap = 'host': a host that answered at least 20 requests and logged no cache call, while other hosts that
--     answered requests did (the cache log names the client host, the one that answered): its cache log not given?
-- Both only where the cache is in use: the lake holds at least one cache call per two answered requests, or none
-- at all (no cache log given: every hour with requests is a gap). An hour with a few cache calls, a gap shorter
-- than an hour, and a host that logs under other names do not show.
CREATE OR REPLACE TEMPORARY VIEW log_gaps AS
WITH answered_requests AS (
    SELECT ts, host
    FROM requests_lake
    WHERE request_id IS NOT NULL
        AND ts IS NOT NULL
        AND (status IS NULL OR status < 400)
),
cache_in_use AS (
    SELECT (SELECT count(*) FROM cache_lines) = 0
        OR (SELECT count(*) FROM cache_lines) * 2 >= (SELECT count(*) FROM answered_requests) AS in_use
),
requests_per_hour AS (
    SELECT hour_us, count(*) AS requests
    FROM (SELECT unix_micros(ts) - unix_micros(ts) % 3600000000 AS hour_us FROM answered_requests) AS r
    GROUP BY hour_us
),
cache_calls_per_hour AS (
    SELECT DISTINCT unix_micros(ts) - unix_micros(ts) % 3600000000 AS hour_us
    FROM cache_lines
    WHERE ts IS NOT NULL
),
hours_without_cache_calls AS (
    SELECT
        r.hour_us,
        r.requests,
        -- consecutive hours keep (hour - rank) constant: one value per run
        r.hour_us - 3600000000 * row_number() OVER (ORDER BY r.hour_us) AS run_id
    FROM requests_per_hour AS r
    LEFT JOIN cache_calls_per_hour AS c
        ON r.hour_us = c.hour_us
    WHERE c.hour_us IS NULL
        AND r.requests >= 20
),
request_hosts AS (
    SELECT host, count(*) AS requests
    FROM answered_requests
    WHERE host IS NOT NULL
    GROUP BY host
),
cache_hosts AS (
    SELECT DISTINCT host
    FROM cache_lines
    WHERE host IS NOT NULL
),
request_hosts_with_cache_calls AS (
    SELECT count(*) AS hosts
    FROM request_hosts AS r
    INNER JOIN cache_hosts AS c
        ON r.host = c.host
)
SELECT
    'hours' AS gap,
    CAST(NULL AS STRING) AS host,
    timestamp_micros(min(h.hour_us)) AS gap_start,
    timestamp_micros(max(h.hour_us) + 3600000000) AS gap_end,
    CAST(sum(h.requests) AS BIGINT) AS requests
FROM hours_without_cache_calls AS h
CROSS JOIN cache_in_use AS u
WHERE u.in_use
GROUP BY h.run_id
UNION ALL
SELECT
    'host' AS gap,
    r.host,
    timestamp_micros(CAST(NULL AS BIGINT)) AS gap_start,
    timestamp_micros(CAST(NULL AS BIGINT)) AS gap_end,
    r.requests
FROM request_hosts AS r
CROSS JOIN cache_in_use AS u
CROSS JOIN request_hosts_with_cache_calls AS w
LEFT JOIN cache_hosts AS c
    ON r.host = c.host
WHERE u.in_use
    AND w.hosts > 0
    AND c.host IS NULL
    AND r.requests >= 20;
