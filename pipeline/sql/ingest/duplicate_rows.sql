-- Re-shipped duplicates, step 2: among the rows with a candidate key, rows with the same identity ({{identity}},
-- compared exactly, not by hash) keep their first occurrence: rows already in the lake first, then input order
-- (file, then line). Every later occurrence in this run's staged records is a duplicate to drop.
-- differs: a request line whose request_id repeats with another session_id or user_id than the line kept is no
-- re-shipped copy but most likely a request id used twice (per-host counters): counted, so it shows.
-- {{viewer}}: ', session_id, user_id' for requests, else nothing; {{differs}} the test on them, else false.
-- same_file: the copy kept is an earlier line of the same input file (not a lake row, not another file's line):
-- for a cache log whose times are too coarse to tell two calls apart, perhaps a second real call (ingest.py).
CREATE OR REPLACE TEMP TABLE dup_rows AS
SELECT source_file, source_line, differs, same_file
FROM (
    SELECT origin, source_file, source_line,
           row_number() OVER w AS nth,
           {{differs}} AS differs,
           coalesce(first_value(source_file) OVER w = source_file, false) AS same_file
    FROM (
        SELECT 0 AS origin, 0 AS file_order, CAST(NULL AS VARCHAR) AS source_file, CAST(0 AS BIGINT) AS source_line,
               {{identity}}{{viewer}}
        FROM {{old}}
        WHERE {{key_expr}} IN (SELECT record_key FROM dup_keys)
        UNION ALL
        SELECT 1, f.file_order, n.source_file, n.source_line, {{identity}}{{viewer}}
        FROM {{new}} AS n JOIN file_order AS f USING (source_file)
        WHERE n.record_key IN (SELECT record_key FROM dup_keys)
    )
    WINDOW w AS (PARTITION BY {{identity}} ORDER BY origin, file_order, source_line)
)
WHERE nth > 1 AND origin = 1
