-- exposures_outside_window: the exposures the chosen window leaves out (exposures_outside_window.parquet,
-- and summary.outside_window), so the responder sees what the window hides.
CREATE OR REPLACE TEMPORARY VIEW exposures_outside_window AS
SELECT e.*
FROM exposures_all AS e
CROSS JOIN chosen_window AS w
WHERE (w.window_start IS NOT NULL AND e.ts < w.window_start)
    OR (w.window_end IS NOT NULL AND e.ts >= w.window_end);
