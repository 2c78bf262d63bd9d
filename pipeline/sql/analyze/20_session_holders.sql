-- session_holders: who holds each session, as [valid_from, valid_to) intervals between its events.
-- The latest event at or before an instant decides: login/refresh -> its user_id (holding = true), also after
-- an expire (a session can be refreshed after it expired); logout/expire -> nobody (holding = false).
-- Ties on ts are ordered by source_file, source_line: the later line wins (the earlier one's interval is empty).
-- valid_to NULL = until the end of the logs. Later views look an instant up with an equi + range join.
CREATE OR REPLACE TEMPORARY VIEW session_holders AS
SELECT
    session_id,
    event AS holder_event,
    CASE WHEN event IN ('login', 'refresh') THEN true ELSE false END AS holding,
    user_id AS holder_user_id,
    ts AS valid_from,
    lead(ts) OVER (PARTITION BY session_id ORDER BY ts, source_file, source_line) AS valid_to
FROM sessions_lake
WHERE session_id IS NOT NULL
    AND ts IS NOT NULL
    AND event IN ('login', 'refresh', 'logout', 'expire');
