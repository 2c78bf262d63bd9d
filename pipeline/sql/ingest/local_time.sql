-- A source's wall-clock times in a zone that changes its clocks (sources.<kind>.timezone other than UTC): created
-- for each such source before its statements, with the session TimeZone set to that zone. A time that names its
-- offset (or Z, UTC) is one instant whatever the zone; these macros concern only the times read as wall time.
-- {{wall}}: the wall time a ts text names when it names no offset or zone, else NULL: the source's ts_format runs
-- without a zone (ingest.py:_local_wall), then an ISO text without one (it still reads with a Z added; an epoch
-- number or a text with an offset does not).

CREATE OR REPLACE TEMP MACRO whosaw_ts_wall_read(t) AS (
    {{wall}}
);

-- A leap second (hh:mm:60) is the first instant of the next second, as whosaw_ts and whosaw_ts_formatted read it;
-- its wall time was NULL, so one in the repeated hour kept the later instant and one in the skipped hour was kept.
CREATE OR REPLACE TEMP MACRO whosaw_ts_wall(t) AS (
    coalesce(whosaw_ts_wall_read(t),
             CASE WHEN contains(t, ':60')
                  THEN whosaw_ts_wall_read(regexp_replace(t, '([0-9][0-9]:[0-9][0-9]):60', '\1:59'))
                       + INTERVAL 1 SECOND
             END)
);

-- The UTC hours (epoch hours) around each change of the zone's offset, 1990..2100: the checks below cost several
-- ICU conversions a line, so they run only there (elsewhere an integer looked up in a small table). A change is
-- found day by day (the offset at 00:00 UTC against the day before's), then hour by hour in the 24 hours before the
-- first day that shows it: the first hour with the new offset. DuckDB reads a skipped or repeated wall time as an
-- instant within the span after the change, so in that hour or, for a change at a half hour, the one before, and
-- for a span of two or three hours in the one or two after (Antarctica/Troll's clocks change by two hours every
-- year): only as many hours as the change spans.
CREATE OR REPLACE TEMP TABLE whosaw_clock_change_hours AS
WITH days AS (
    SELECT
        day_no,
        epoch(CAST(to_timestamp(day_no * 86400) AS TIMESTAMP)) - day_no * 86400 AS offset_s
    FROM range(7304, 47848) AS r(day_no)
),
changed_days AS (
    SELECT day_no
    FROM (SELECT day_no, offset_s, lag(offset_s) OVER (ORDER BY day_no) AS offset_before FROM days)
    WHERE offset_s <> offset_before
),
hours_before AS (
    SELECT
        day_no,
        day_no * 24 + h AS hour,
        epoch(CAST(to_timestamp((day_no * 24 + h) * 3600) AS TIMESTAMP)) - (day_no * 24 + h) * 3600 AS offset_s
    FROM changed_days, range(-25, 1) AS r(h)
),
changed_hours AS (
    SELECT
        hour,
        abs(offset_s - offset_before) AS span_s
    FROM (
        SELECT hour, offset_s, lag(offset_s) OVER (PARTITION BY day_no ORDER BY hour) AS offset_before
        FROM hours_before
    )
    WHERE offset_s <> offset_before
)
SELECT DISTINCT hour + unnest(range(-1, CAST(ceil(span_s / 3600) AS BIGINT))) AS hour
FROM changed_hours;

CREATE OR REPLACE TEMP MACRO whosaw_near_clock_change(ts) AS (
    epoch_us(ts) // 3600000000 IN (SELECT hour FROM whosaw_clock_change_hours)
);

-- A wall time the zone skips when its clocks go forward (02:30 on the night Berlin goes from 02:00 to 03:00): no
-- clock in that zone shows it, so the source's timezone is wrong or the line is. DuckDB would read it as another
-- hour (an hour later); ingest rejects it (nonexistent_local_ts). The instant read back as wall time differs
-- from the text's wall time (compared to the second: a nanosecond text's wall rounds as its instant does not).
CREATE OR REPLACE TEMP MACRO whosaw_ts_skipped(t, ts) AS (
    CASE WHEN whosaw_near_clock_change(ts) THEN abs(epoch(CAST(ts AS TIMESTAMP)) - epoch(whosaw_ts_wall(t))) >= 1 END
);

-- A wall time that occurs twice when the zone's clocks go back (02:30 on the night Berlin goes from 03:00 back to
-- 02:00): DuckDB reads the later of the two instants; an hour (half an hour on Lord Howe Island, two hours at
-- Antarctica/Troll, three at Antarctica/Casey in some years) earlier reads as the same wall time. Such a line is
-- staged apart (stage.sql) and placed by its file's order of lines (repeated_hour.sql).
-- whosaw_repeated_span_s: that span in seconds for the later instant ts, NULL where ts's wall time occurs once.
CREATE OR REPLACE TEMP MACRO whosaw_repeated_span_s(ts) AS (
    CASE WHEN CAST(ts - INTERVAL 1 HOUR AS TIMESTAMP) = CAST(ts AS TIMESTAMP) THEN 3600
         WHEN CAST(ts - INTERVAL 30 MINUTE AS TIMESTAMP) = CAST(ts AS TIMESTAMP) THEN 1800
         WHEN CAST(ts - INTERVAL 2 HOUR AS TIMESTAMP) = CAST(ts AS TIMESTAMP) THEN 7200
         WHEN CAST(ts - INTERVAL 3 HOUR AS TIMESTAMP) = CAST(ts AS TIMESTAMP) THEN 10800
    END
);

CREATE OR REPLACE TEMP MACRO whosaw_ts_repeated(t, ts) AS (
    CASE WHEN whosaw_near_clock_change(ts) THEN
        whosaw_ts_wall(t) IS NOT NULL AND whosaw_repeated_span_s(ts) IS NOT NULL
    END
);
