-- The lines whose wall time their zone repeats when its clocks go back (local_time.sql's whosaw_ts_repeated), each
-- placed at the first or the second of its two instants by its file's order of lines: a log is written in the
-- order things happen, so the first time its clock steps back by more than half the repeated span (02:59 to
-- 02:00) is the clock going back. Run with the session TimeZone set to the source's zone.
-- {{repeated}}: those lines as staged (ts = the later instant, as DuckDB reads such a wall time); {{records}}:
-- the other staged records (source_file, source_line, ts) of the same run, for files whose clock never steps back.
-- placed_ts: the instant, NULL where the file's order cannot tell (rejected as ambiguous_local_ts):
--   * before the turn: the first instant; from the turn on: the second, but for a line written late (threads
--     logging out of order across the turn) whose wall time is within a minute of the last one before the turn
--     and more than half the span after the second pass's latest so far, when that says it was written within a
--     minute of its time (its wall time at least the span less a minute after the second pass's latest) or the
--     second pass goes on below it later in the file (more than half the span below: in order, that would be a
--     second step back). Else it is where it stands: a sparse log's 02:59 CET logged after its 02:20 CET, and
--     nothing after it, is not a first-pass line written 20 minutes late;
--   * a second step back after the turn (a file not in time order: two hosts' logs one after the other): the
--     order tells nothing, every such line of that file and day is NULL;
--   * no turn in the file: the first instant when the file has records before these lines and none after
--     (it ends inside the first pass), the second when it has some after and none before (it starts inside the
--     second pass); with both, one pass went unlogged and nothing tells which; with neither, nothing either.
CREATE OR REPLACE TEMP TABLE repeated_hour_placed AS
WITH repeated_lines AS (
    SELECT
        source_file,
        source_line,
        ts AS later_ts,
        CAST(ts AS TIMESTAMP) AS wall,
        CAST(CAST(ts AS TIMESTAMP) AS DATE) AS repeat_day,
        whosaw_repeated_span_s(ts) AS span_s
    FROM {{repeated}}
),
stepped_lines AS (
    SELECT
        repeated_lines.*,
        max(wall) OVER (
            PARTITION BY source_file, repeat_day ORDER BY source_line
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS latest_wall_before
    FROM repeated_lines
),
clock_turns AS (
    SELECT
        source_file,
        repeat_day,
        min(source_line) AS turn_line
    FROM stepped_lines
    WHERE epoch(latest_wall_before) - epoch(wall) > span_s / 2
    GROUP BY source_file, repeat_day
),
turned_lines AS (
    SELECT
        s.*,
        t.turn_line,
        max(CASE WHEN s.source_line < t.turn_line THEN s.wall END) OVER (
            PARTITION BY s.source_file, s.repeat_day
        ) AS last_wall_before_turn
    FROM stepped_lines AS s
    INNER JOIN clock_turns AS t
        ON s.source_file = t.source_file
        AND s.repeat_day = t.repeat_day
),
second_pass_lines AS (
    SELECT
        turned_lines.*,
        max(CASE WHEN wall < last_wall_before_turn - INTERVAL 1 MINUTE THEN wall END) OVER (
            PARTITION BY source_file, repeat_day ORDER BY source_line
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS second_pass_latest,
        min(CASE WHEN wall < last_wall_before_turn - INTERVAL 1 MINUTE THEN wall END) OVER (
            PARTITION BY source_file, repeat_day ORDER BY source_line
            ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING
        ) AS second_pass_earliest_after
    FROM turned_lines
    WHERE source_line >= turn_line
),
disordered_days AS (
    SELECT DISTINCT
        source_file,
        repeat_day
    FROM second_pass_lines
    WHERE epoch(second_pass_latest) - epoch(wall) > span_s / 2
),
placed_by_turn AS (
    SELECT
        t.source_file,
        t.source_line,
        CASE
            WHEN d.source_file IS NOT NULL THEN CAST(NULL AS VARCHAR)
            WHEN t.source_line < t.turn_line THEN 'before_turn'
            WHEN t.wall >= t.last_wall_before_turn - INTERVAL 1 MINUTE
                AND (p.second_pass_latest IS NULL OR epoch(t.wall) - epoch(p.second_pass_latest) > t.span_s / 2)
                AND (p.second_pass_latest IS NULL OR epoch(t.wall) - epoch(p.second_pass_latest) >= t.span_s - 60
                     OR epoch(t.wall) - epoch(p.second_pass_earliest_after) > t.span_s / 2)
                THEN 'written_late'
            ELSE 'after_turn'
        END AS placement
    FROM turned_lines AS t
    LEFT JOIN second_pass_lines AS p
        ON t.source_file = p.source_file
        AND t.source_line = p.source_line
    LEFT JOIN disordered_days AS d
        ON t.source_file = d.source_file
        AND t.repeat_day = d.repeat_day
),
unturned_spans AS (
    SELECT
        source_file,
        repeat_day,
        min(source_line) AS first_line,
        max(source_line) AS last_line
    FROM repeated_lines
    ANTI JOIN clock_turns USING (source_file, repeat_day)
    GROUP BY source_file, repeat_day
),
unturned_context AS (
    SELECT
        u.source_file,
        u.repeat_day,
        coalesce(bool_or(r.source_line < u.first_line), false) AS logged_before,
        coalesce(bool_or(r.source_line > u.last_line), false) AS logged_after
    FROM unturned_spans AS u
    LEFT JOIN {{records}} AS r
        ON r.source_file = u.source_file
    GROUP BY u.source_file, u.repeat_day
),
placed_by_context AS (
    SELECT
        l.source_file,
        l.source_line,
        CASE
            WHEN c.logged_before AND NOT c.logged_after THEN 'file_ends_in_first_pass'
            WHEN c.logged_after AND NOT c.logged_before THEN 'file_starts_in_second_pass'
        END AS placement
    FROM repeated_lines AS l
    INNER JOIN unturned_context AS c
        ON l.source_file = c.source_file
        AND l.repeat_day = c.repeat_day
),
placements AS (
    SELECT * FROM placed_by_turn
    UNION ALL
    SELECT * FROM placed_by_context
)
SELECT
    l.source_file,
    l.source_line,
    p.placement,
    CASE
        WHEN p.placement IN ('before_turn', 'written_late', 'file_ends_in_first_pass')
            THEN l.later_ts - to_seconds(l.span_s)
        WHEN p.placement IN ('after_turn', 'file_starts_in_second_pass') THEN l.later_ts
    END AS placed_ts
FROM repeated_lines AS l
INNER JOIN placements AS p
    ON l.source_file = p.source_file
    AND l.source_line = p.source_line;
