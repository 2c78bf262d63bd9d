-- queued_calls: the calls of every segment that holds an abandoned call, numbered for the FIFO rule. In a
-- segment without one, every read gets its own reply (nothing to number). Within a segment:
-- call_no = 1, 2, ... over the calls; read_no = 1, 2, ... over the reading calls (every status but
-- cancelled/timeout). The reading call with read_no r received the reply of call_no r.
-- Per segment: segment_reads (its reading calls), ends_with_error (its last call reset it), open_at_log_end
-- (the connection's log ends inside it) for 72_discarded_replies.
-- Cost: a segment's calls are consecutive on its connection (25_connection_segments), so call_no =
-- line_no - the segment's first line_no + 1 needs no sort; the per-segment figures come from one grouping,
-- joined back. Only read_no sorts, and only the segments that hold an abandoned call.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW queued_calls AS
WITH segments_with_abandoned_calls AS (
    SELECT
        conn_no,
        segment_no,
        min(line_no) AS first_line_no,
        count(*) - count(CASE WHEN is_abandoned = 1 THEN 1 END) AS segment_reads,
        max(is_error) AS ends_with_error,
        max(is_connection_last) AS open_at_log_end
    FROM connection_segments
    WHERE NOT is_reset_op
    GROUP BY conn_no, segment_no
    HAVING max(is_abandoned) = 1
),
segment_calls AS (
    SELECT
        s.line_id,
        s.conn_no,
        s.segment_no,
        s.ts,
        s.is_error,
        s.is_abandoned,
        s.line_no - a.first_line_no + 1 AS call_no,
        a.segment_reads,
        a.ends_with_error,
        a.open_at_log_end
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
    call_no,
    CASE
        WHEN is_abandoned = 0 THEN row_number() OVER (
            PARTITION BY conn_no, segment_no, is_abandoned ORDER BY ts NULLS LAST, line_id
        )
        ELSE CAST(NULL AS BIGINT)
    END AS read_no,
    segment_reads,
    ends_with_error,
    open_at_log_end
FROM segment_calls;
