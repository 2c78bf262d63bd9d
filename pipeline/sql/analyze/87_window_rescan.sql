-- window_rescan: the candidate stretches of a second scan, over the buckets outside the primary stretch once
-- that reaches llr_needed (86_primary_stretch): the primary's buckets taken out, the rest scanned again as one
-- sequence, the secondary cluster of Kulldorff's scan statistic. A bug whose rate changes (an intense first hour,
-- then a mild tail) is its intense part to the first scan, which weighs the tail as the rate elsewhere; with the
-- intense part taken out, the tail stands out from the steady rate of the rest, and 90_chosen_window joins the
-- two. Nothing stands out of steady noise: no second stretch reaches llr_needed.
-- Candidates as in 85_window_scan, over the shorter sequence: a stretch holding the primary's place spans the
-- buckets on both sides of it (its counts less the primary's); the bucket after the primary may start a stretch
-- and the one before it end one whatever their rates (their neighbours changed: more candidates, still exact).
CREATE OR REPLACE TEMPORARY VIEW window_rescan AS
WITH primary_found AS (
    SELECT first_bucket, last_bucket, buckets_in, crossed_in, calls_in
    FROM primary_stretch
    WHERE llr >= llr_needed
),
rest_buckets AS (
    SELECT b.*
    FROM scan_buckets AS b
    INNER JOIN primary_found AS p
        ON b.bucket_index < p.first_bucket OR b.bucket_index > p.last_bucket
),
rest_totals AS (
    SELECT count(*) AS buckets, sum(crossed) AS crossed, sum(calls) AS calls
    FROM rest_buckets
),
rescan_starts AS (
    SELECT
        r.position,
        r.bucket_index,
        r.crossed_through - r.crossed AS crossed_before_start,
        r.calls_through - r.calls AS calls_before_start
    FROM rest_buckets AS r
    CROSS JOIN primary_found AS p
    WHERE r.crossed > 0
        AND (r.crossed_before IS NULL OR r.crossed * r.calls_before > r.crossed_before * r.calls
             OR r.bucket_before = p.last_bucket)
),
rescan_ends AS (
    SELECT r.position, r.bucket_index, r.crossed_through, r.calls_through
    FROM rest_buckets AS r
    CROSS JOIN primary_found AS p
    WHERE r.crossed > 0
        AND (r.crossed_after IS NULL OR r.crossed * r.calls_after > r.crossed_after * r.calls
             OR r.bucket_after = p.first_bucket)
),
rescan_stretches AS (
    SELECT
        s.bucket_index AS first_bucket,
        e.bucket_index AS last_bucket,
        CASE WHEN s.bucket_index < p.first_bucket AND e.bucket_index > p.last_bucket THEN 1 ELSE 0 END
            AS holds_primary,
        e.position - s.position + 1 AS buckets_through,
        e.crossed_through - s.crossed_before_start AS crossed_through,
        e.calls_through - s.calls_before_start AS calls_through,
        p.buckets_in AS primary_buckets,
        p.crossed_in AS primary_crossed,
        p.calls_in AS primary_calls
    FROM rescan_starts AS s
    INNER JOIN rescan_ends AS e
        ON e.position >= s.position
    CROSS JOIN primary_found AS p
),
counted_stretches AS (
    SELECT
        first_bucket,
        last_bucket,
        buckets_through - holds_primary * primary_buckets AS buckets_in,
        crossed_through - holds_primary * primary_crossed AS crossed_in,
        calls_through - holds_primary * primary_calls AS calls_in
    FROM rescan_stretches
)
SELECT
    c.first_bucket,
    c.last_bucket,
    c.buckets_in,
    c.crossed_in,
    c.calls_in,
    t.buckets - c.buckets_in AS buckets_out,
    t.crossed - c.crossed_in AS crossed_out,
    t.calls - c.calls_in AS calls_out,
    c.crossed_in * ln((CAST(c.crossed_in AS DOUBLE) * t.calls) / (CAST(c.calls_in AS DOUBLE) * t.crossed))
        + CASE
            WHEN t.crossed - c.crossed_in > 0 THEN
                (t.crossed - c.crossed_in)
                * ln((CAST(t.crossed - c.crossed_in AS DOUBLE) * t.calls)
                     / (CAST(t.calls - c.calls_in AS DOUBLE) * t.crossed))
            ELSE CAST(0 AS DOUBLE)
        END AS llr
FROM counted_stretches AS c
CROSS JOIN rest_totals AS t
WHERE CAST(c.crossed_in AS DOUBLE) * (t.calls - c.calls_in) > CAST(t.crossed - c.crossed_in AS DOUBLE) * c.calls_in;
