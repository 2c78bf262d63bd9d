-- requests: canonical texts (f_*) -> typed, normalised lake columns, and the reason a line is not a record.
-- Empty strings are NULL; ids (request_id, session_id, user_id) written as 42.0 are 42 (whosaw_id). The first
-- failing check names the reason.
-- {{record_key}}: a hash of the identity, request_id (ingest.py's _KEY_EXPR).
-- {{read_ts}}: the macro that reads a ts text: whosaw_ts, or whosaw_ts_formatted for a source's ts_format.
-- {{ts_skipped}}, {{ts_repeated}}: a wall time its zone skips or repeats (local_time.sql), for a source whose
-- timezone is not UTC.
SELECT file_id, line_no, raw, ts, request_id, session_id, user_id, route,
       CASE WHEN whosaw_status_ok(status_num) THEN CAST(status_num AS INTEGER) END AS status, host,
       CASE WHEN pre_reason IS NOT NULL THEN pre_reason
            WHEN ts_text IS NULL THEN 'missing_field:ts'
            WHEN request_id IS NULL THEN 'missing_field:request_id'
            {{structured}}
            WHEN ts IS NULL OR NOT whosaw_ts_ok(ts) THEN 'bad_ts'
            {{ts_skipped}}
            WHEN status_text IS NOT NULL AND NOT coalesce(whosaw_status_ok(status_num), false) THEN 'bad_status'
       END AS reason,
       {{ts_repeated}} AS ts_repeated,
       {{record_key}} AS record_key
FROM (
    SELECT *, {{read_ts}}(ts_text) AS ts, TRY_CAST(status_text AS DOUBLE) AS status_num
    FROM (
        SELECT file_id, line_no, raw, pre_reason,
               nullif(f_ts, '') AS ts_text,
               whosaw_id(nullif(f_request_id, '')) AS request_id,
               whosaw_id(nullif(f_session_id, '')) AS session_id,
               whosaw_id(nullif(f_user_id, '')) AS user_id,
               nullif(f_route, '') AS route,
               nullif(f_status, '') AS status_text,
               nullif(f_host, '') AS host
        FROM ({{fields}})
    )
)
