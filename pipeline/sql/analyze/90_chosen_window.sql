-- chosen_window: the exposure window [window_start, window_end) and how it was chosen (params.window_method:
-- 'cli' | 'config' | 'all' come from Python; 'auto' is found here), with the auto rule's figures.
-- Auto (docs/design.md "Auto window"): the incident is the stretch of consecutive buckets whose crossed
--   replies least fit one steady rate for all the logs: the highest log-likelihood ratio of 85_window_scan
--   (Kulldorff's Poisson scan statistic, with each bucket's cache calls as its share of the traffic); ties:
--   the earliest stretch. It must reach an llr of at least 15 (a steady rate is then e^15, about 3 million
--   times less likely): steady Poisson noise over up to a month of 5-minute buckets stayed below that in
--   simulation, so background crossed replies alone give no window. Then the buckets outside that stretch are
--   scanned again (87_window_rescan): if their best stretch reaches that llr too (the rest of a bug whose rate
--   changed, or a second burst), the incident runs from the first of the two stretches to the last. The window
--   runs from the floor-second of the incident's first crossed reply to the end of the second of its last
--   one. No such stretch: no auto window (start/end NULL = all time), and it says so.
--   baseline (the 10th percentile of crossed replies per bucket: the quiet level) and threshold = baseline +
--   max(1, 3 x sqrt(baseline)) describe the counts: elevated_buckets = buckets of the stretch above it (the
--   timeline chart draws both); they do not choose the window.
--   llr is ranked rounded to 6 decimals (86_primary_stretch, rescan_best below): ln may differ in its last
--   bit between engines, and a tie of two stretches must not be broken by that.
--   The baseline is percentile_cont(0.1) spelled out: the count at 1 + (buckets - 1) / 10 in rank order,
--   interpolated to the next one, in integers (tenths) and one division, so it is the double nearest the exact
--   value on every engine. percentile_cont itself interpolates in floating point, differently per engine:
--   DuckDB gave 1.2000000000000002 where Spark gave 1.2 (counts 1 and 3), and at a whole threshold (baseline 49:
--   70) the two engines counted different elevated_buckets.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW chosen_window AS
WITH ranked_counts AS (
    SELECT
        crossed_replies,
        row_number() OVER (ORDER BY crossed_replies) AS bucket_rank,
        CAST(((count(*) OVER () - 1) - (count(*) OVER () - 1) % 10) / 10 AS BIGINT) + 1 AS low_rank,
        (count(*) OVER () - 1) % 10 AS tenths
    FROM timeline_buckets
),
baseline_points AS (
    SELECT
        max(CASE WHEN bucket_rank = low_rank THEN crossed_replies END) AS low_count,
        max(CASE WHEN bucket_rank = low_rank + 1 THEN crossed_replies END) AS high_count,
        max(tenths) AS tenths,
        count(*) AS buckets
    FROM ranked_counts
),
bucket_baseline AS (
    SELECT
        CAST(10 * low_count + tenths * (coalesce(high_count, low_count) - low_count) AS DOUBLE) / 10 AS baseline,
        buckets
    FROM baseline_points
),
bucket_threshold AS (
    SELECT baseline, baseline + greatest(1.0, 3.0 * sqrt(baseline)) AS threshold, buckets
    FROM bucket_baseline
),
rescan_best AS (
    -- one row: the second scan's best stretch (87_window_rescan; NULLs when there was none)
    SELECT
        max(first_bucket) AS first_bucket,
        max(last_bucket) AS last_bucket,
        max(llr) AS llr
    FROM (
        SELECT first_bucket, last_bucket, llr
        FROM window_rescan
        ORDER BY round(llr, 6) DESC, first_bucket, last_bucket
        LIMIT 1
    ) AS best_rescan
),
incident_run AS (
    -- one row (NULLs when the primary stretch does not reach llr_needed): the primary stretch, widened to the
    -- second one when that reaches llr_needed too (from the first of the two to the last)
    SELECT
        max(CASE WHEN r.llr >= p.llr_needed AND r.first_bucket < p.first_bucket THEN r.first_bucket
                 ELSE p.first_bucket END) AS first_bucket,
        max(CASE WHEN r.llr >= p.llr_needed AND r.last_bucket > p.last_bucket THEN r.last_bucket
                 ELSE p.last_bucket END) AS last_bucket,
        max(r.llr) AS second_llr,
        max(CASE WHEN r.llr >= p.llr_needed THEN 2 ELSE 1 END) AS stretches
    FROM primary_stretch AS p
    CROSS JOIN rescan_best AS r
    WHERE p.llr >= p.llr_needed
),
scan_totals AS (
    SELECT sum(crossed) AS crossed, sum(calls) AS calls
    FROM scan_buckets
),
incident_buckets AS (
    SELECT
        count(*) AS run_buckets,
        sum(CASE WHEN b.crossed_replies > h.threshold THEN 1 ELSE 0 END) AS elevated_buckets,
        sum(b.crossed_replies) AS crossed_in_run,
        sum(b.calls) AS calls_in_run
    FROM timeline_buckets AS b
    INNER JOIN incident_run AS r
        ON b.bucket_index BETWEEN r.first_bucket AND r.last_bucket
    CROSS JOIN bucket_threshold AS h
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
        coalesce(n.crossed_in_run, 0) AS crossed_in_run,
        n.calls_in_run,
        t.crossed - n.crossed_in_run AS crossed_outside,
        t.calls - n.calls_in_run AS calls_outside,
        -- DOUBLEs on both engines (1000.0 * n / d is a DECIMAL on Spark, rounded at 13 places); NULL when the
        -- joined stretches leave no cache call outside
        CAST(1000 * n.crossed_in_run AS DOUBLE) / n.calls_in_run AS per_1000_calls_in_run,
        CAST(1000 * (t.crossed - n.crossed_in_run) AS DOUBLE) / nullif(t.calls - n.calls_in_run, 0)
            AS per_1000_calls_outside,
        r.second_llr,
        r.stretches
    FROM incident_span AS s
    CROSS JOIN incident_run AS r
    CROSS JOIN incident_buckets AS n
    CROSS JOIN scan_totals AS t
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
    a.calls_in_run,
    a.crossed_outside,
    a.calls_outside,
    a.per_1000_calls_in_run,
    a.per_1000_calls_outside,
    g.llr AS best_llr,  -- NULL without crossed replies
    g.llr_needed,
    a.second_llr,
    a.stretches,
    a.auto_start,
    a.auto_end
FROM params AS p
CROSS JOIN bucket_threshold AS h
CROSS JOIN primary_stretch AS g
CROSS JOIN auto_window AS a;
