-- sessions: canonical texts (f_*) -> typed, normalised lake columns, and the reason a line is not a record.
-- Empty strings are NULL; ids (session_id, user_id) written as 42.0 are 42 (whosaw_id); event lower case and
-- one of {{events}}.
-- {{record_key}}: a hash of the identity, the whole normalised record.
-- {{read_ts}}: the macro that reads a ts text: whosaw_ts, or whosaw_ts_formatted for a source's ts_format.
-- {{ts_skipped}}, {{ts_repeated}}: a wall time its zone skips or repeats (local_time.sql), for a source whose
-- timezone is not UTC.
-- {{word}}: what reads an event text: lower, or whosaw_word for a source's values map (values.sql).
SELECT file_id, line_no, raw, ts, session_id, user_id, event,
       CASE WHEN pre_reason IS NOT NULL THEN pre_reason
            WHEN ts_text IS NULL THEN 'missing_field:ts'
            WHEN session_id IS NULL THEN 'missing_field:session_id'
            WHEN event IS NULL THEN 'missing_field:event'
            {{structured}}
            WHEN ts IS NULL OR NOT whosaw_ts_ok(ts) THEN 'bad_ts'
            {{ts_skipped}}
            WHEN event NOT IN {{events}} THEN 'bad_event'
       END AS reason,
       {{ts_repeated}} AS ts_repeated,
       {{record_key}} AS record_key
FROM (
    SELECT file_id, line_no, raw, pre_reason,
           nullif(f_ts, '') AS ts_text,
           {{read_ts}}(nullif(f_ts, '')) AS ts,
           whosaw_id(nullif(f_session_id, '')) AS session_id,
           whosaw_id(nullif(f_user_id, '')) AS user_id,
           {{word}}(nullif(f_event, '')) AS event
    FROM ({{fields}})
)
