-- cache: canonical texts (f_*) -> typed, normalised lake columns, and the reason a line is not a record.
-- Empty strings are NULL; ids (request_id, conn_id, value_owner) written as 42.0 are 42 (whosaw_id); op upper
-- case; status lower case, NULL -> 'ok', other spellings and a source's values map read by {{word}} ('canceled',
-- as Go clients write it, -> 'cancelled'); value_sha256 lower case.
-- A reset op ({{reset_ops}}) may come without a key; every other operation needs one.
-- The identity of a cache line is the whole normalised record (background writes have no request_id);
-- {{record_key}} hashes the part of it that tells lines apart in practice (a connection never logs two lines at
-- one ts), cheaper than hashing the value digest too: ingest confirms candidates on the whole record.
-- {{read_ts}}: the macro that reads a ts text: whosaw_ts, or whosaw_ts_formatted for a source's ts_format.
-- {{ts_skipped}}, {{ts_repeated}}: a wall time its zone skips or repeats (local_time.sql), for a source whose
-- timezone is not UTC.
-- {{word}}: what reads a status text: whosaw_word (values.sql), or lower where there are no words to map.
SELECT file_id, line_no, raw, ts, request_id, op, key, status, host, conn_id, value_sha256, value_owner,
       CASE WHEN pre_reason IS NOT NULL THEN pre_reason
            WHEN ts_text IS NULL THEN 'missing_field:ts'
            WHEN op IS NULL THEN 'missing_field:op'
            {{structured}}
            WHEN ts IS NULL OR NOT whosaw_ts_ok(ts) THEN 'bad_ts'
            {{ts_skipped}}
            WHEN key IS NULL AND op NOT IN {{reset_ops}} THEN 'missing_field:key'
            WHEN status NOT IN {{statuses}} THEN 'bad_status'
       END AS reason,
       {{ts_repeated}} AS ts_repeated,
       {{record_key}} AS record_key
FROM (
    SELECT file_id, line_no, raw, pre_reason,
           nullif(f_ts, '') AS ts_text,
           {{read_ts}}(nullif(f_ts, '')) AS ts,
           whosaw_id(nullif(f_request_id, '')) AS request_id,
           upper(nullif(f_op, '')) AS op,
           nullif(f_key, '') AS key,
           coalesce({{word}}(nullif(f_status, '')), 'ok') AS status,
           nullif(f_host, '') AS host,
           whosaw_id(nullif(f_conn_id, '')) AS conn_id,
           lower(nullif(f_value_sha256, '')) AS value_sha256,
           whosaw_id(nullif(f_value_owner, '')) AS value_owner
    FROM ({{fields}})
)
