-- scan_buckets: the buckets the auto window scans (timeline_buckets with cache calls), in time order: their
-- position, the running sums of crossed replies and calls through each, and the neighbours' counts and bucket
-- numbers. 85_window_scan scans them all, 87_window_rescan those outside the first scan's stretch.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW scan_buckets AS
WITH scanned_buckets AS (
    SELECT
        bucket_index,
        CAST(crossed_replies AS BIGINT) AS crossed,
        CAST(calls AS BIGINT) AS calls
    FROM timeline_buckets
    WHERE calls > 0
)
SELECT
    bucket_index,
    crossed,
    calls,
    row_number() OVER (ORDER BY bucket_index) AS position,
    sum(crossed) OVER (ORDER BY bucket_index ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS crossed_through,
    sum(calls) OVER (ORDER BY bucket_index ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS calls_through,
    lag(crossed) OVER (ORDER BY bucket_index) AS crossed_before,
    lag(calls) OVER (ORDER BY bucket_index) AS calls_before,
    lag(bucket_index) OVER (ORDER BY bucket_index) AS bucket_before,
    lead(crossed) OVER (ORDER BY bucket_index) AS crossed_after,
    lead(calls) OVER (ORDER BY bucket_index) AS calls_after,
    lead(bucket_index) OVER (ORDER BY bucket_index) AS bucket_after
FROM scanned_buckets;
