-- sources.<kind>.ts_format: a ts text read with the source's strptime formats first, then as whosaw_ts reads it
-- (ISO-8601, epoch numbers), so a log mixing both forms is read whole. Created for each source before its
-- statements, with the session TimeZone already set to the source's zone.
-- {{read}}: one try_strptime per run of formats with and without a zone (%z, %Z), coalesced in the config's order
-- (ingest.py:_ts_read): DuckDB gives TIMESTAMPTZ for a format with a zone and TIMESTAMP without one, which is
-- cast to TIMESTAMPTZ, i.e. read in the session zone, as a zone-less ISO time is. A run of formats with a zone
-- name (%Z) but no offset (%z) counts only where the text names one zone (macros.sql's whosaw_zone_named).
-- A leap second (hh:mm:60), which strptime does not read either, is the first instant of the next second, as in
-- whosaw_ts; only a text holding ':60' is read a second time.
CREATE OR REPLACE TEMP MACRO whosaw_ts_read(t) AS (
    {{read}}
);

CREATE OR REPLACE TEMP MACRO whosaw_ts_formatted(t) AS (
    CASE WHEN NOT whosaw_offset_bad(t) THEN  -- %z reads +9900 as 99 hours (macros.sql)
    coalesce(whosaw_ts_read(t),
             CASE WHEN contains(t, ':60')
                  THEN whosaw_ts_read(regexp_replace(t, '([0-9][0-9]:[0-9][0-9]):60', '\1:59')) + INTERVAL 1 SECOND
             END,
             whosaw_ts(t))
    END
);
