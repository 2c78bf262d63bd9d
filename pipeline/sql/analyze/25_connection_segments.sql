-- connection_segments: every line on a known pooled connection, placed in its segment (docs/design.md
-- "Cache log semantics"). A connection's lines are in call order by (ts, line_id). A segment is the stretch
-- between resets: a reset op (CONNECT, RECONNECT, ...) discards the unread replies and starts a clean
-- connection; a call with status 'error' read its reply and then reset the connection. With K = running
-- count of reset ops and errors: a call belongs to segment 2K (an error to 2(K-1): it resets after
-- itself); a reset op sits alone in segment 2K-1, so it is never a call and segment numbers keep rising.
-- is_abandoned: a call sent and abandoned (cancelled/timeout): its reply stays unread on the connection.
-- is_connection_last: the last line logged for the connection (whatever was unread then, nothing shows).
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
)
SELECT
    line_id,
    conn_no,
    ts,
    is_reset_op,
    is_error,
    is_abandoned,
    2 * count(CASE WHEN is_reset_op OR is_error = 1 THEN 1 END) OVER (
        PARTITION BY conn_no ORDER BY ts, line_id
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) - CASE WHEN is_reset_op THEN 1 WHEN is_error = 1 THEN 2 ELSE 0 END AS segment_no,
    CASE
        WHEN lead(line_id) OVER (PARTITION BY conn_no ORDER BY ts, line_id) IS NULL THEN 1 ELSE 0
    END AS is_connection_last
FROM connection_lines;
