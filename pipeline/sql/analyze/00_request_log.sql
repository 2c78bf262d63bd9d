-- request_log: one row per request that the application answered, with the columns the analysis uses.
-- Ingest already drops re-shipped duplicates (same request_id); keeping the first line (by ts, source_file,
-- source_line) of any request_id that still occurs twice guarantees that no later join can multiply a read
-- by a duplicated request line. Only the (rare) duplicated ids go through the window function.
-- A line without ts (or source_file) sorts last: NULLS LAST is written out, since DuckDB's default puts NULLs
-- last and Spark's first (left implicit, Spark kept the undated copy and its session and user).
-- materialize
CREATE OR REPLACE TEMPORARY VIEW request_log AS
WITH duplicated_request_ids AS (
    SELECT request_id
    FROM requests_lake
    WHERE request_id IS NOT NULL
    GROUP BY request_id
    HAVING count(*) > 1
),
unique_request_lines AS (
    SELECT r.ts, r.request_id, r.session_id, r.user_id, r.route, r.status
    FROM requests_lake AS r
    LEFT JOIN duplicated_request_ids AS d
        ON r.request_id = d.request_id
    WHERE r.request_id IS NOT NULL
        AND d.request_id IS NULL
),
first_of_duplicated_lines AS (
    SELECT ts, request_id, session_id, user_id, route, status
    FROM (
        SELECT
            r.ts,
            r.request_id,
            r.session_id,
            r.user_id,
            r.route,
            r.status,
            row_number() OVER (
                PARTITION BY r.request_id ORDER BY r.ts NULLS LAST, r.source_file NULLS LAST, r.source_line
            ) AS copy_no
        FROM requests_lake AS r
        INNER JOIN duplicated_request_ids AS d
            ON r.request_id = d.request_id
    ) AS numbered_duplicates
    WHERE copy_no = 1
),
request_lines AS (
    SELECT * FROM unique_request_lines
    UNION ALL
    SELECT * FROM first_of_duplicated_lines
)
SELECT
    ts,
    request_id,
    session_id,
    user_id,
    route,
    status,
    CASE WHEN status >= 500 THEN true ELSE false END AS request_failed
FROM request_lines;
