-- session_holders: who holds each session, as [valid_from, valid_to) intervals between its events.
-- The latest event at or before an instant decides: login/refresh -> the session's holder (holding = true), also
-- after an expire (a session can be refreshed after it expired); logout/expire -> nobody (holding = false).
-- The holder (holder_user_id) is the user_id of the event, or for a refresh that names no one, of the latest
-- earlier event that named the holder: a login, or a refresh with a user_id (a refresh renews the session, it
-- does not hand it over). A login that names no one starts a holder nobody named (NULL: 45_read_viewers then
-- takes the request's user_id). holder_group numbers those naming events (a running count), so the name is the
-- one of the group's first event.
-- Ties on ts are ordered by source_file, source_line: the later line wins (the earlier one's interval is empty).
-- valid_to NULL = until the end of the logs. Later views look an instant up with an equi + range join.
CREATE OR REPLACE TEMPORARY VIEW session_holders AS
WITH session_events AS (
    SELECT
        session_id,
        event,
        user_id,
        ts,
        source_file,
        source_line,
        CASE WHEN event = 'login' OR (event = 'refresh' AND user_id IS NOT NULL) THEN 1 ELSE 0 END AS names_holder
    FROM sessions_lake
    WHERE session_id IS NOT NULL
        AND ts IS NOT NULL
        AND event IN ('login', 'refresh', 'logout', 'expire')
),
grouped_events AS (
    SELECT
        session_events.*,
        sum(names_holder) OVER (
            PARTITION BY session_id ORDER BY ts, source_file NULLS LAST, source_line
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS holder_group,
        lead(ts) OVER (PARTITION BY session_id ORDER BY ts, source_file NULLS LAST, source_line) AS valid_to
    FROM session_events
)
SELECT
    session_id,
    event AS holder_event,
    CASE WHEN event IN ('login', 'refresh') THEN true ELSE false END AS holding,
    CASE
        WHEN event IN ('login', 'refresh') THEN
            max(CASE WHEN names_holder = 1 THEN user_id END) OVER (PARTITION BY session_id, holder_group)
        ELSE user_id
    END AS holder_user_id,
    ts AS valid_from,
    valid_to
FROM grouped_events;
