-- window_activity: who was active inside the chosen window: one row per (signed-in viewer, session) of the
-- requests answered in the window, the viewer taken at the instant of the request (same rule as
-- 45_read_viewers). Active users = distinct viewers, active sessions = distinct sessions (summary.json;
-- anonymous visitors and stale tabs of ended sessions are not active users).
-- materialize
CREATE OR REPLACE TEMPORARY VIEW window_activity AS
WITH window_request_viewers AS (
    SELECT
        q.session_id,
        CASE
            WHEN h.holding = false THEN CAST(NULL AS STRING)
            WHEN h.holding = true THEN coalesce(h.holder_user_id, q.user_id)
            ELSE q.user_id
        END AS viewer_id
    FROM request_log AS q
    CROSS JOIN chosen_window AS w
    LEFT JOIN session_holders AS h
        ON q.session_id = h.session_id
        AND h.valid_from <= q.ts
        AND (h.valid_to IS NULL OR q.ts < h.valid_to)
    WHERE (w.window_start IS NULL OR q.ts >= w.window_start)
        AND (w.window_end IS NULL OR q.ts < w.window_end)
)
SELECT DISTINCT viewer_id, session_id
FROM window_request_viewers
WHERE viewer_id IS NOT NULL;
