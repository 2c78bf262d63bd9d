-- chosen_window: the exposure window [window_start, window_end) and how it was chosen (params.window_method:
-- 'cli' | 'config' | 'all' come from Python; 'auto' is found here), with the auto rule's figures.
-- Auto (docs/design.md "Auto window"): crossed replies per bucket (timeline_buckets, buckets with traffic);
--   baseline  = the 10th percentile of crossed replies per bucket: the quiet level, whatever share of the
--               logs the incident covers (up to 90%); a median would be the incident's own rate when it
--               covers more than half of the logs;
--   threshold = baseline + max(1, 3 x sqrt(baseline)): counts at the quiet level vary like Poisson counts;
--   the incident = the run of consecutive buckets with the largest total excess sum(crossed - threshold)
--               (maximum-sum segment: running excess minus its lowest earlier value); a short dip inside a
--               burst stays in it, a long quiet stretch splits bursts, and the larger burst wins;
--   the window runs from the floor-second of the run's first crossed reply to the end of the second of its
--   last one. No bucket above the threshold: no auto window (start/end NULL = all time), and it says so.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW chosen_window AS
WITH bucket_baseline AS (
    SELECT
        percentile_cont(0.1) WITHIN GROUP (ORDER BY crossed_replies) AS baseline,
        count(*) AS buckets
    FROM timeline_buckets
),
bucket_threshold AS (
    SELECT baseline, baseline + greatest(1.0, 3.0 * sqrt(baseline)) AS threshold, buckets
    FROM bucket_baseline
),
scored_buckets AS (
    SELECT
        t.bucket_index,
        t.crossed_replies,
        t.crossed_replies - h.threshold AS excess
    FROM timeline_buckets AS t
    CROSS JOIN bucket_threshold AS h
),
running_buckets AS (
    -- running excess = running crossed (an exact integer) - buckets so far x threshold: one multiplication
    -- per row, so every engine gets the same doubles (a running sum of doubles may round differently)
    SELECT
        s.bucket_index,
        s.crossed_replies,
        s.excess,
        sum(s.crossed_replies) OVER (ORDER BY s.bucket_index ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
            - row_number() OVER (ORDER BY s.bucket_index) * h.threshold AS running_excess
    FROM scored_buckets AS s
    CROSS JOIN bucket_threshold AS h
),
lowest_before_buckets AS (
    SELECT
        running_buckets.*,
        coalesce(lag(running_excess) OVER (ORDER BY bucket_index), 0.0) AS excess_before,
        least(0.0, coalesce(min(running_excess) OVER (
            ORDER BY bucket_index ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ), 0.0)) AS lowest_before
    FROM running_buckets
),
best_run_end AS (
    SELECT bucket_index AS last_bucket, running_excess - lowest_before AS run_excess, lowest_before
    FROM (
        SELECT
            lowest_before_buckets.*,
            row_number() OVER (
                ORDER BY running_excess - lowest_before DESC, bucket_index
            ) AS end_rank
        FROM lowest_before_buckets
    ) AS ranked_ends
    WHERE end_rank = 1 AND running_excess - lowest_before > 0
),
incident_run AS (
    SELECT
        max(b.bucket_index) AS first_bucket,
        max(e.last_bucket) AS last_bucket
    FROM lowest_before_buckets AS b
    INNER JOIN best_run_end AS e
        ON b.bucket_index <= e.last_bucket
        AND b.excess_before = e.lowest_before
),
incident_buckets AS (
    SELECT
        count(*) AS run_buckets,
        sum(CASE WHEN b.excess > 0 THEN 1 ELSE 0 END) AS elevated_buckets,
        sum(b.crossed_replies) AS crossed_in_run
    FROM lowest_before_buckets AS b
    INNER JOIN incident_run AS r
        ON b.bucket_index BETWEEN r.first_bucket AND r.last_bucket
),
incident_span AS (
    SELECT
        min(c.ts) AS first_crossed,
        max(c.ts) AS last_crossed
    FROM notable_reads AS c
    CROSS JOIN params AS p
    INNER JOIN incident_run AS r
        ON CAST(
            (unix_micros(c.ts) - unix_micros(c.ts) % (p.bucket_seconds * 1000000))
            / (p.bucket_seconds * 1000000) AS BIGINT
        ) BETWEEN r.first_bucket AND r.last_bucket
    WHERE c.crossed
),
auto_window AS (
    SELECT
        timestamp_micros(unix_micros(s.first_crossed) - unix_micros(s.first_crossed) % 1000000) AS auto_start,
        timestamp_micros(unix_micros(s.last_crossed) - unix_micros(s.last_crossed) % 1000000 + 1000000)
            AS auto_end,
        r.first_bucket,
        r.last_bucket,
        coalesce(n.run_buckets, 0) AS run_buckets,
        coalesce(n.elevated_buckets, 0) AS elevated_buckets,
        coalesce(n.crossed_in_run, 0) AS crossed_in_run
    FROM incident_span AS s
    CROSS JOIN incident_run AS r
    CROSS JOIN incident_buckets AS n
)
SELECT
    p.window_method,
    CASE WHEN p.window_method = 'auto' THEN a.auto_start ELSE p.window_start END AS window_start,
    CASE WHEN p.window_method = 'auto' THEN a.auto_end ELSE p.window_end END AS window_end,
    p.bucket_seconds,
    h.baseline,
    h.threshold,
    h.buckets,
    a.run_buckets,
    a.elevated_buckets,
    a.crossed_in_run,
    a.auto_start,
    a.auto_end
FROM params AS p
CROSS JOIN bucket_threshold AS h
CROSS JOIN auto_window AS a;
