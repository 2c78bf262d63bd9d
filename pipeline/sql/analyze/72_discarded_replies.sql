-- discarded_replies: replies that were sent for a call, never read, and thrown away when the connection was
-- reset (a reset op, or an error read that reset it): stale data the pool discarded before it could cross.
-- Only segments holding an abandoned call can leave replies unread (27_queued_calls): with R reading calls,
-- calls R+1 .. n were never read. The segment was reset when a later segment exists on the connection or
-- its last call was an error. Only calls whose reply was data (a read op) count. A reply still unread
-- when the log ends is not counted (nothing shows what became of it).
CREATE OR REPLACE TEMPORARY VIEW discarded_replies AS
WITH segment_totals AS (
    SELECT
        conn_no,
        segment_no,
        coalesce(max(read_no), 0) AS segment_reads,
        max(is_error) AS ends_with_error
    FROM queued_calls
    GROUP BY conn_no, segment_no
),
connection_totals AS (
    SELECT conn_no, max(segment_no) AS last_segment_no
    FROM connection_segments
    GROUP BY conn_no
),
unread_calls AS (
    SELECT q.line_id
    FROM queued_calls AS q
    INNER JOIN segment_totals AS s
        ON q.conn_no = s.conn_no
        AND q.segment_no = s.segment_no
    INNER JOIN connection_totals AS t
        ON q.conn_no = t.conn_no
    WHERE q.call_no > s.segment_reads
        AND (s.segment_no < t.last_segment_no OR s.ends_with_error = 1)
)
SELECT
    l.line_id,
    l.ts,
    l.request_id,
    l.host,
    l.conn_id,
    l.key,
    l.key_category,
    l.key_owner,
    l.file_no,
    l.source_line
FROM unread_calls AS u
INNER JOIN cache_lines AS l
    ON u.line_id = l.line_id
WHERE l.is_read_op;
