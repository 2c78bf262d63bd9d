-- connection_segments: every line on a known pooled connection, placed in its segment (docs/design.md
-- "Cache log semantics"). A connection's lines are in call order by (ts, line_id); a line without ts (a lake other
-- tools wrote) comes last, NULLS LAST written out in every such ORDER BY (27, 35, 40 too): DuckDB's default
-- puts NULLs last, Spark's first, and left implicit the two engines queued the replies in different orders.
-- A segment is the stretch between resets: a reset op (CONNECT, RECONNECT, ...) discards the unread replies and
-- starts a clean connection; a call with status 'error' read its reply and then reset the connection. With K = running
-- count of reset ops and errors: a call belongs to segment 2K (an error to 2(K-1): it resets after
-- itself); a reset op sits alone in segment 2K-1, so it is never a call and segment numbers keep rising.
-- A segment's lines are therefore consecutive in the connection's order.
-- is_abandoned: a call sent and abandoned (cancelled/timeout): its reply stays unread on the connection.
-- is_connection_last: the last line logged for the connection (whatever was unread then, nothing shows).
-- line_no: the line's position on its connection (1, 2, ...); 27_queued_calls numbers a segment's calls
-- from it.
-- Cost: running counts (count/sum OVER a growing frame) are several times slower than row_number on
-- DuckDB, so K is counted with row numbers: numbering the reset ops and errors apart from the other lines
-- (rank_in_kind), a reset or error is the rank_in_kind-th one so far, and before any other line there
-- were line_no - rank_in_kind of them.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW connection_segments AS
WITH connection_lines AS (
    SELECT
        line_id,
        conn_no,
        ts,
        is_reset_op,
        CASE WHEN NOT is_reset_op AND status = 'error' THEN 1 ELSE 0 END AS is_error,
        CASE WHEN NOT is_reset_op AND status IN ('cancelled', 'timeout') THEN 1 ELSE 0 END AS is_abandoned,
        CASE WHEN is_reset_op OR status = 'error' THEN 1 ELSE 0 END AS resets
    FROM cache_lines
    WHERE conn_no IS NOT NULL
),
numbered_lines AS (
    SELECT
        connection_lines.*,
        row_number() OVER (PARTITION BY conn_no ORDER BY ts NULLS LAST, line_id) AS line_no,
        row_number() OVER (PARTITION BY conn_no, resets ORDER BY ts NULLS LAST, line_id) AS rank_in_kind,
        lead(line_id) OVER (PARTITION BY conn_no ORDER BY ts NULLS LAST, line_id) AS next_line_id
    FROM connection_lines
),
counted_lines AS (
    SELECT
        numbered_lines.*,
        CASE WHEN resets = 1 THEN rank_in_kind ELSE line_no - rank_in_kind END AS resets_so_far
    FROM numbered_lines
)
SELECT
    line_id,
    conn_no,
    ts,
    is_reset_op,
    is_error,
    is_abandoned,
    2 * resets_so_far - CASE WHEN is_reset_op THEN 1 WHEN is_error = 1 THEN 2 ELSE 0 END AS segment_no,
    CASE WHEN next_line_id IS NULL THEN 1 ELSE 0 END AS is_connection_last,
    line_no
FROM counted_lines;
