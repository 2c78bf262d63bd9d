-- primary_stretch: the first scan's best stretch (85_window_scan: the highest llr, ranked rounded to 6 decimals,
-- since ln may differ in its last bit between engines; ties: the earliest stretch), and the llr a window needs
-- (llr_needed, docs/design.md "Auto window"). Always one row: the stretch's columns are NULL when there is no
-- candidate (no crossed replies, or none that can be told from a steady rate).
-- materialize
CREATE OR REPLACE TEMPORARY VIEW primary_stretch AS
WITH scan_rule AS (
    SELECT CAST(15 AS DOUBLE) AS llr_needed
),
ranked_stretches AS (
    SELECT
        window_scan.*,
        row_number() OVER (ORDER BY round(llr, 6) DESC, first_bucket, last_bucket) AS stretch_rank
    FROM window_scan
)
SELECT
    r.first_bucket,
    r.last_bucket,
    r.buckets_in,
    r.crossed_in,
    r.calls_in,
    r.llr,
    s.llr_needed
FROM scan_rule AS s
LEFT JOIN ranked_stretches AS r
    ON r.stretch_rank = 1;
