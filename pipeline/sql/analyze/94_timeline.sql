-- timeline: timeline_buckets in time order, in_window = the bucket overlaps the chosen window, with the auto
-- rule's baseline and threshold repeated on every row (timeline.parquet; the report charts it).
CREATE OR REPLACE TEMPORARY VIEW timeline AS
SELECT
    t.bucket_start,
    t.bucket_seconds,
    t.requests,
    t.reads,
    t.crossed_replies,
    t.exposures,
    t.near_misses,
    CASE
        WHEN (w.window_start IS NULL
                OR (t.bucket_index + 1) * t.bucket_seconds * 1000000 > unix_micros(w.window_start))
            AND (w.window_end IS NULL
                OR t.bucket_index * t.bucket_seconds * 1000000 < unix_micros(w.window_end)) THEN true
        ELSE false
    END AS in_window,
    w.baseline,
    w.threshold
FROM timeline_buckets AS t
CROSS JOIN chosen_window AS w;
