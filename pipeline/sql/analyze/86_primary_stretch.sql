-- primary_stretch: the first scan's best stretch (85_window_scan: the highest llr, ranked rounded to 6 decimals,
-- since ln may differ in its last bit between engines; ties: the earliest stretch), and the llr a window needs
-- (llr_needed, docs/design.md "Auto window"). Always one row (an aggregate of at most one): the stretch's
-- columns are NULL when there is no candidate (no crossed replies, or none that can be told from a steady rate).
-- materialize
CREATE OR REPLACE TEMPORARY VIEW primary_stretch AS
WITH best_stretch AS (
    -- the top one only (not row_number over every candidate: a sort of millions of stretches on a month of logs)
    SELECT *
    FROM window_scan
    ORDER BY round(llr, 6) DESC, first_bucket, last_bucket
    LIMIT 1
)
SELECT
    max(first_bucket) AS first_bucket,
    max(last_bucket) AS last_bucket,
    max(buckets_in) AS buckets_in,
    max(crossed_in) AS crossed_in,
    max(calls_in) AS calls_in,
    max(llr) AS llr,
    CAST(15 AS DOUBLE) AS llr_needed
FROM best_stretch;
