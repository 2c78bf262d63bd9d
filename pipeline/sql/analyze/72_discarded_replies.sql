-- discarded_replies: replies that were sent for a call, never read, and thrown away when the connection was
-- reset (a reset op, or an error read that reset it): stale data the pool discarded before it could cross.
-- Only segments holding an abandoned call can leave replies unread (27_queued_calls): with R reading calls,
-- calls R+1 .. n were never read. The segment was reset unless the connection's log ends inside it (then
-- nothing shows what became of them: not counted) and it did not end with an error. Only calls whose reply
-- was data (a read op) count.
CREATE OR REPLACE TEMPORARY VIEW discarded_replies AS
WITH unread_calls AS (
    SELECT line_id
    FROM queued_calls
    WHERE call_no > segment_reads
        AND (open_at_log_end = 0 OR ends_with_error = 1)
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
