-- connection_segments: every line on a known pooled connection, placed in its segment (docs/design.md
-- "Cache log semantics"). A connection's lines are in call order by (ts, line_id). A segment is the stretch
-- between resets: a reset op (CONNECT, RECONNECT, ...) discards the unread replies and starts a clean
-- connection; a call with status 'error' read its reply and then reset the connection. With K = running
-- count of reset ops and errors: a call belongs to segment 2K (an error to 2(K-1): it resets after
-- itself); a reset op sits alone in segment 2K-1, so it is never a call and segment numbers keep rising.
-- A segment's lines are therefore consecutive in the connection's order.
-- is_abandoned: a call sent and abandoned (cancelled/timeout): its reply stays unread on the connection.
-- is_connection_last: the last line logged for the connection (whatever was unread then, nothing shows).
-- line_no: the line's position on its connection (1, 2, ...); abandoned_before: abandoned calls before it
-- on its connection. 27_queued_calls numbers calls and reads within a segment from these two.
-- Cost: this is the one sort of the whole cache log by connection. Every running count is a pass of its
-- own, so the two counts ride in one running sum: resets and errors in units of 2^32, abandoned calls in
-- units of 1 (a connection has far fewer than 2^32 lines), split again by integer arithmetic.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW connection_segments AS
WITH connection_lines AS (
    SELECT
        line_id,
        conn_no,
        ts,
        is_reset_op,
        CASE WHEN NOT is_reset_op AND status = 'error' THEN 1 ELSE 0 END AS is_error,
        CASE WHEN NOT is_reset_op AND status IN ('cancelled', 'timeout') THEN 1 ELSE 0 END AS is_abandoned
    FROM cache_lines
    WHERE conn_no IS NOT NULL
),
counted_lines AS (
    SELECT
        connection_lines.*,
        CAST(sum(
            CASE WHEN is_reset_op OR is_error = 1 THEN 4294967296 ELSE 0 END + is_abandoned
        ) OVER (
            PARTITION BY conn_no ORDER BY ts, line_id
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS BIGINT) AS packed_counts,
        row_number() OVER (PARTITION BY conn_no ORDER BY ts, line_id) AS line_no,
        lead(line_id) OVER (PARTITION BY conn_no ORDER BY ts, line_id) AS next_line_id
    FROM connection_lines
)
SELECT
    line_id,
    conn_no,
    ts,
    is_reset_op,
    is_error,
    is_abandoned,
    -- integer floor division (exact on every engine): (m - m % d) / d
    2 * CAST((packed_counts - packed_counts % 4294967296) / 4294967296 AS BIGINT)
        - CASE WHEN is_reset_op THEN 1 WHEN is_error = 1 THEN 2 ELSE 0 END AS segment_no,
    CASE WHEN next_line_id IS NULL THEN 1 ELSE 0 END AS is_connection_last,
    line_no,
    packed_counts % 4294967296 - is_abandoned AS abandoned_before
FROM counted_lines;
