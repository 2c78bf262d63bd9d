-- near_misses: every near miss (75_near_misses_all) flagged in_window for the chosen window.
CREATE OR REPLACE TEMPORARY VIEW near_misses AS
SELECT
    n.*,
    CASE
        WHEN (w.window_start IS NULL OR n.ts >= w.window_start)
            AND (w.window_end IS NULL OR n.ts < w.window_end) THEN true
        ELSE false
    END AS in_window
FROM near_misses_all AS n
CROSS JOIN chosen_window AS w;
