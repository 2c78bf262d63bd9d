-- exposures_in_window: the exposures inside the chosen window (window_start <= ts < window_end, NULL = open):
-- what exposures.parquet / exposures.csv hold. Filtering by window is the last step, so the summary can count
-- what the window hides (92_exposures_outside_window).
CREATE OR REPLACE TEMPORARY VIEW exposures_in_window AS
SELECT e.*
FROM exposures_all AS e
CROSS JOIN chosen_window AS w
WHERE (w.window_start IS NULL OR e.ts >= w.window_start)
    AND (w.window_end IS NULL OR e.ts < w.window_end);
