-- near_misses_all: stale replies that reached no one as data (crossed reads, and replies thrown away unread),
-- all time (docs/design.md "near miss"):
--   'failed'     the read that received another call's reply failed: status error (the client threw the
--                reply away and reset), or its request answered 5xx;
--   'not-data'   the reading op is no read op (a SET got a stale GET reply), or the stale reply was no
--                data (a GET got the "OK" of a SET);
--   'background' a read on behalf of no request (background work) received it;
--   'discarded'  a data reply left unread and thrown away by a reset before anyone read it
--                (72_discarded_replies; viewer_id NULL).
-- category and owner_id: of the reply that crossed (the value's key, else the reply call's key).
-- materialize
CREATE OR REPLACE TEMPORARY VIEW near_misses_all AS
WITH near_miss_lines AS (
    SELECT
        ts,
        request_id,
        host,
        conn_id,
        outcome AS kind,
        CASE WHEN reply_not_data THEN reply_key_category ELSE category END AS category,
        CASE WHEN reply_not_data THEN reply_key_owner ELSE owner_id END AS owner_id,
        viewer_id,
        file_no,
        source_line
    FROM notable_reads
    WHERE crossed
        AND outcome <> 'served'
    UNION ALL
    SELECT
        ts,
        request_id,
        host,
        conn_id,
        'discarded' AS kind,
        key_category AS category,
        key_owner AS owner_id,
        CAST(NULL AS STRING) AS viewer_id,
        file_no,
        source_line
    FROM discarded_replies
)
SELECT
    n.ts,
    n.request_id,
    n.host,
    n.conn_id,
    n.kind,
    n.category,
    n.owner_id,
    n.viewer_id,
    f.source_file,
    n.source_line
FROM near_miss_lines AS n
INNER JOIN source_files AS f
    ON n.file_no = f.file_no;
