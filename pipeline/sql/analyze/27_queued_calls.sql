-- queued_calls: the calls of every segment that holds an abandoned call, numbered for the FIFO rule. In a
-- segment without one, every read gets its own reply (nothing to number). Within a segment:
-- call_no = 1, 2, ... over the calls; read_no = running count of reading calls (every status but
-- cancelled/timeout). The reading call with read_no r received the reply of call_no r.
-- Per segment: segment_reads (its reading calls), ends_with_error (its last call reset it), open_at_log_end
-- (the connection's log ends inside it) for 72_discarded_replies.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW queued_calls AS
WITH segments_with_abandoned_calls AS (
    SELECT DISTINCT conn_no, segment_no
    FROM connection_segments
    WHERE is_abandoned = 1
),
segment_calls AS (
    SELECT s.line_id, s.conn_no, s.segment_no, s.ts, s.is_error, s.is_abandoned, s.is_connection_last
    FROM connection_segments AS s
    INNER JOIN segments_with_abandoned_calls AS a
        ON s.conn_no = a.conn_no
        AND s.segment_no = a.segment_no
    WHERE NOT s.is_reset_op
)
SELECT
    line_id,
    conn_no,
    segment_no,
    is_error,
    row_number() OVER (PARTITION BY conn_no, segment_no ORDER BY ts, line_id) AS call_no,
    CASE
        WHEN is_abandoned = 0 THEN count(CASE WHEN is_abandoned = 0 THEN 1 END) OVER (
            PARTITION BY conn_no, segment_no ORDER BY ts, line_id
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        )
        ELSE CAST(NULL AS BIGINT)
    END AS read_no,
    count(CASE WHEN is_abandoned = 0 THEN 1 END) OVER (PARTITION BY conn_no, segment_no) AS segment_reads,
    max(is_error) OVER (PARTITION BY conn_no, segment_no) AS ends_with_error,
    max(is_connection_last) OVER (PARTITION BY conn_no, segment_no) AS open_at_log_end
FROM segment_calls;
