-- crossed_replies: every reading call that received the reply of another call (connection tier), with that
-- call: the read numbered read_no r in its segment got the reply of call number r (27_queued_calls). Reads
-- with read_no = call_no got their own reply and are not listed. Small (only crossed reads), so it is
-- materialised: later joins build their hash table on it, not on all reads.
-- Plan: the few crossed reads first, then their reply calls in queued_calls, then those lines in cache_lines,
-- each hashed on the right. Left to its estimates, DuckDB joined all queued calls to the whole cache log
-- before selecting the crossed reads (0.40 CPU-s at 1M against 0.08).
-- materialize
-- duckdb: joins as written
CREATE OR REPLACE TEMPORARY VIEW crossed_replies AS
WITH shifted_reads AS (
    SELECT
        r.line_id,
        p.line_id AS reply_line_id
    FROM queued_calls AS p
    INNER JOIN queued_calls AS r
        ON r.conn_no = p.conn_no
        AND r.segment_no = p.segment_no
        AND r.read_no = p.call_no
    WHERE r.read_no IS NOT NULL
        AND r.read_no <> r.call_no
)
SELECT
    s.line_id,
    s.reply_line_id,
    p.key AS reply_key,
    p.is_read_op AS reply_is_read_op,
    p.key_owner AS reply_key_owner,
    p.key_category AS reply_key_category,
    p.key_severity AS reply_key_severity,
    p.key_multi AS reply_key_multi,
    p.request_id AS reply_request_id
FROM cache_lines AS p
INNER JOIN shifted_reads AS s
    ON s.reply_line_id = p.line_id;
