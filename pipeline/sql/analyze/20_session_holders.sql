-- session_holders: who holds each session, as [valid_from, valid_to) intervals between its events.
-- The latest event at or before an instant decides: login/refresh -> the session's holder (holding = true), also
-- after an expire (a session can be refreshed after it expired); logout/expire -> nobody (holding = false).
-- The holder (holder_user_id) is the user_id of the event, or for a refresh that names no one, of the latest
-- earlier event that named the holder: a login, or a refresh with a user_id (a refresh renews the session, it
-- does not hand it over), unless a logout came between. A login that names no one starts a holder nobody named
-- (NULL: 45_read_viewers then takes the request's user_id), and so does a logout for the refreshes that name no
-- one after it: the user signed out, and who renewed the session the log does not say (an expire keeps the
-- holder: a session can be refreshed after it expired). holder_group numbers those events (a running count), so
-- the name is the one of the group's first event.
-- Ties on ts are ordered by file, then source_line: the later line wins (the earlier one's interval is empty). Files
-- in the order they were written, by the first ts each holds (as 05_source_files orders the cache files): a
-- rotated sessions.jsonl.1 before the current sessions.jsonl, which sorts first by name.
-- A logout or an expire ends the session just after its instant: at the instant itself (an interval of one
-- microsecond) the session is as it was before (no interval when no event came before: the request's user). A
-- log in whole seconds writes the logout request's own reads in the second of its logout; read as after it, the
-- user's own data was an exposure to an anonymous viewer. (A login or refresh holds from its instant on.)
-- Several ends logged one after the other at one instant (an expire and a logout, a logout logged twice) are one
-- run (end_run): at that instant the session is as it was before the run's first, not as after the one before
-- the last (nobody: the holder's own reads in that second were exposures to an anonymous viewer).
-- valid_to NULL = until the end of the logs. Later views look an instant up with an equi + range join.
CREATE OR REPLACE TEMPORARY VIEW session_holders AS
WITH session_files AS (
    SELECT
        source_file,
        row_number() OVER (ORDER BY min(ts) NULLS LAST, source_file NULLS LAST) AS file_no
    FROM sessions_lake
    GROUP BY source_file
),
session_events AS (
    SELECT
        s.session_id,
        s.event,
        s.user_id,
        s.ts,
        f.file_no,
        s.source_line,
        CASE WHEN s.event = 'login' OR (s.event = 'refresh' AND s.user_id IS NOT NULL) THEN 1 ELSE 0 END
            AS names_holder,
        CASE WHEN s.event IN ('login', 'logout') OR (s.event = 'refresh' AND s.user_id IS NOT NULL) THEN 1 ELSE 0 END
            AS starts_holder_group
    FROM sessions_lake AS s
    LEFT JOIN session_files AS f
        ON s.source_file = f.source_file
    WHERE s.session_id IS NOT NULL
        AND s.ts IS NOT NULL
        AND s.event IN ('login', 'refresh', 'logout', 'expire')
),
grouped_events AS (
    SELECT
        session_events.*,
        sum(starts_holder_group) OVER (
            PARTITION BY session_id ORDER BY ts, file_no NULLS LAST, source_line
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS holder_group,
        lead(ts) OVER (PARTITION BY session_id ORDER BY ts, file_no NULLS LAST, source_line) AS valid_to
    FROM session_events
),
held_intervals AS (
    SELECT
        session_id,
        CASE WHEN event IN ('login', 'refresh') THEN true ELSE false END AS holding,
        CASE
            WHEN event IN ('login', 'refresh') THEN
                max(CASE WHEN names_holder = 1 THEN user_id END) OVER (PARTITION BY session_id, holder_group)
            ELSE user_id
        END AS holder_user_id,
        ts,
        file_no,
        source_line,
        valid_to
    FROM grouped_events
),
sequenced_intervals AS (
    SELECT
        held_intervals.*,
        lag(holding) OVER (PARTITION BY session_id ORDER BY ts, file_no NULLS LAST, source_line) AS holding_before,
        lag(holder_user_id) OVER (PARTITION BY session_id ORDER BY ts, file_no NULLS LAST, source_line)
            AS holder_before,
        lag(ts) OVER (PARTITION BY session_id ORDER BY ts, file_no NULLS LAST, source_line) AS ts_before,
        timestamp_micros(unix_micros(ts) + 1) AS after_ts
    FROM held_intervals
),
-- a logout or expire right after another at the same instant goes on its run; any other event starts one
run_starts AS (
    SELECT
        sequenced_intervals.*,
        CASE WHEN NOT holding AND holding_before = false AND ts_before = ts THEN 0 ELSE 1 END AS starts_run
    FROM sequenced_intervals
),
numbered_runs AS (
    SELECT
        run_starts.*,
        sum(starts_run) OVER (
            PARTITION BY session_id ORDER BY ts, file_no NULLS LAST, source_line
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS end_run
    FROM run_starts
),
-- the session as it was before the run's first event (holding as 1/0, NULL when no event came before)
runs_before AS (
    SELECT
        numbered_runs.*,
        max(CASE WHEN starts_run = 1 THEN
            CASE WHEN holding_before THEN 1 WHEN NOT holding_before THEN 0 END
        END) OVER (PARTITION BY session_id, end_run) AS run_holding_before,
        max(CASE WHEN starts_run = 1 THEN holder_before END) OVER (PARTITION BY session_id, end_run)
            AS run_holder_before
    FROM numbered_runs
)
-- a login or refresh: held from its instant on
SELECT session_id, holding, holder_user_id, ts AS valid_from, valid_to
FROM runs_before
WHERE holding
UNION ALL
-- a logout or expire: at its very instant (one microsecond, the lake's resolution) the session as it was before
-- its run (empty but for the run's last: the next event is at the same instant)
SELECT
    session_id,
    CASE WHEN run_holding_before = 1 THEN true ELSE false END AS holding,
    run_holder_before AS holder_user_id,
    ts AS valid_from,
    CASE WHEN valid_to IS NOT NULL AND valid_to < after_ts THEN valid_to ELSE after_ts END AS valid_to
FROM runs_before
WHERE NOT holding
    AND run_holding_before IS NOT NULL
UNION ALL
-- ... and nobody from just after it (empty when the next event is at the same instant)
SELECT session_id, holding, holder_user_id, after_ts AS valid_from, valid_to
FROM runs_before
WHERE NOT holding;
