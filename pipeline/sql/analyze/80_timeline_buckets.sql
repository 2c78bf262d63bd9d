-- timeline_buckets: per time bucket (params.bucket_seconds, default 300 s) with any traffic: requests,
-- cache calls (every cache line but a connection reset), served items, crossed replies, exposures and near
-- misses, all time (counts BIGINT on every engine: DuckDB's sum of integers is a HUGEINT, which Parquet stores
-- as DOUBLE). Buckets are aligned to the epoch; bucket_index = bucket number since the epoch. The auto
-- window (85_window_scan, 90_chosen_window) reads crossed_replies and calls.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW timeline_buckets AS
WITH timeline_events AS (
    SELECT
        ts, 1 AS is_request, 0 AS is_call, 0 AS is_served, 0 AS is_crossed, 0 AS is_exposure, 0 AS is_near_miss
    FROM request_log
    UNION ALL
    SELECT
        ts,
        0 AS is_request,
        CASE WHEN is_reset_op THEN 0 ELSE 1 END AS is_call,
        CASE WHEN is_read_op AND status = 'ok' THEN 1 ELSE 0 END AS is_served,
        0 AS is_crossed,
        0 AS is_exposure,
        0 AS is_near_miss
    FROM cache_lines
    UNION ALL
    SELECT
        ts,
        0 AS is_request,
        0 AS is_call,
        0 AS is_served,
        CASE WHEN crossed THEN 1 ELSE 0 END AS is_crossed,
        0 AS is_exposure,
        0 AS is_near_miss
    FROM notable_reads
    UNION ALL
    SELECT
        ts, 0 AS is_request, 0 AS is_call, 0 AS is_served, 0 AS is_crossed, 1 AS is_exposure, 0 AS is_near_miss
    FROM exposures_all
    UNION ALL
    SELECT
        ts, 0 AS is_request, 0 AS is_call, 0 AS is_served, 0 AS is_crossed, 0 AS is_exposure, 1 AS is_near_miss
    FROM near_misses_all
),
bucketed_events AS (
    SELECT
        -- integer floor division (exact on every engine): (m - m % d) / d
        CAST(
            (unix_micros(e.ts) - unix_micros(e.ts) % (p.bucket_seconds * 1000000))
            / (p.bucket_seconds * 1000000) AS BIGINT
        ) AS bucket_index,
        p.bucket_seconds,
        e.is_request,
        e.is_call,
        e.is_served,
        e.is_crossed,
        e.is_exposure,
        e.is_near_miss
    FROM timeline_events AS e
    CROSS JOIN params AS p
    WHERE e.ts IS NOT NULL
)
SELECT
    bucket_index,
    timestamp_micros(bucket_index * bucket_seconds * 1000000) AS bucket_start,
    bucket_seconds,
    CAST(sum(is_request) AS BIGINT) AS requests,
    CAST(sum(is_call) AS BIGINT) AS calls,
    CAST(sum(is_served) AS BIGINT) AS reads,
    CAST(sum(is_crossed) AS BIGINT) AS crossed_replies,
    CAST(sum(is_exposure) AS BIGINT) AS exposures,
    CAST(sum(is_near_miss) AS BIGINT) AS near_misses
FROM bucketed_events
GROUP BY bucket_index, bucket_seconds;
