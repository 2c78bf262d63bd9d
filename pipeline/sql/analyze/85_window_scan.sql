-- window_scan: the candidate incident stretches of the auto window (docs/design.md "Auto window"), each with
-- its log-likelihood ratio (LLR): Kulldorff's Poisson scan statistic in time. A stretch of consecutive buckets
-- (timeline_buckets with cache calls) has crossed_in crossed replies over calls_in cache calls, the rest of the
-- logs crossed_out over calls_out; under one steady rate for all the logs each bucket's expected share is its
-- share of the calls, and
--   llr = crossed_in ln(rate_in / rate) + crossed_out ln(rate_out / rate)   (0 ln 0 = 0; rate = crossed / calls
--         over all the logs, rate_in and rate_out inside and outside the stretch),
-- the log of how much better "one rate inside, another outside" explains the counts than one rate. Only
-- stretches whose rate is higher inside are listed. Zero crossed replies outside gives the highest llr to the
-- shortest stretch holding them all, so a sparse incident is kept whole; a steady background does not pay
-- its way into the stretch.
-- Candidates (exact, not a heuristic): the best stretch starts at a bucket whose rate (crossed per call) is
-- above the previous bucket's and ends at one whose rate is above the next bucket's (with its two rates fixed,
-- the best stretch is the maximum-sum run of crossed - level x calls for a level between them: its first
-- bucket's rate is above that level and the previous bucket's is not; the same at its end). Only those
-- buckets are paired, so the pairs stay few.
-- Integer counts are summed (exact); each llr is two logarithms of ratios of one row's integers (no large
-- terms cancelling), the same on every engine up to the last bit of ln (90_chosen_window ranks it rounded to
-- 6 decimals).
CREATE OR REPLACE TEMPORARY VIEW window_scan AS
WITH scan_totals AS (
    SELECT count(*) AS buckets, sum(crossed) AS crossed, sum(calls) AS calls
    FROM scan_buckets
),
stretch_starts AS (
    SELECT
        position,
        bucket_index,
        crossed_through - crossed AS crossed_before_start,
        calls_through - calls AS calls_before_start
    FROM scan_buckets
    WHERE crossed > 0
        AND (crossed_before IS NULL OR crossed * calls_before > crossed_before * calls)
),
stretch_ends AS (
    SELECT position, bucket_index, crossed_through, calls_through
    FROM scan_buckets
    WHERE crossed > 0
        AND (crossed_after IS NULL OR crossed * calls_after > crossed_after * calls)
),
stretches AS (
    SELECT
        s.bucket_index AS first_bucket,
        e.bucket_index AS last_bucket,
        e.position - s.position + 1 AS buckets_in,
        e.crossed_through - s.crossed_before_start AS crossed_in,
        e.calls_through - s.calls_before_start AS calls_in,
        t.crossed - (e.crossed_through - s.crossed_before_start) AS crossed_out,
        t.calls - (e.calls_through - s.calls_before_start) AS calls_out,
        t.buckets - (e.position - s.position + 1) AS buckets_out,
        t.crossed,
        t.calls
    FROM stretch_starts AS s
    INNER JOIN stretch_ends AS e
        ON e.position >= s.position
    CROSS JOIN scan_totals AS t
)
SELECT
    first_bucket,
    last_bucket,
    buckets_in,
    crossed_in,
    calls_in,
    buckets_out,
    crossed_out,
    calls_out,
    crossed_in * ln((CAST(crossed_in AS DOUBLE) * calls) / (CAST(calls_in AS DOUBLE) * crossed))
        + CASE
            WHEN crossed_out > 0 THEN
                crossed_out * ln((CAST(crossed_out AS DOUBLE) * calls) / (CAST(calls_out AS DOUBLE) * crossed))
            ELSE CAST(0 AS DOUBLE)
        END AS llr
FROM stretches
WHERE CAST(crossed_in AS DOUBLE) * calls_out > CAST(crossed_out AS DOUBLE) * calls_in;
