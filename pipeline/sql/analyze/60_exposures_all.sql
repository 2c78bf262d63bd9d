-- exposures_all: every exposure in the logs, before the window: a served item (52_notable_items: a read, or
-- one item of a multi-key value, item_no) that reached its viewer, with a known owner, shown to someone else
-- than its owner (anonymous viewers count), not covered by a grant.
-- A read whose request is missing from the requests log (viewer_kind 'unknown') is kept when its value
-- is not that of the key asked for (another owner, or a key without owner): the victim counts even when
-- the viewer cannot be named.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW exposures_all AS
SELECT
    c.ts,
    c.request_id,
    c.session_id,
    c.viewer_id,
    c.owner_id,
    c.key,
    c.category,
    c.severity,
    c.evidence,
    f.source_file,
    c.source_line,
    c.viewer_kind,
    c.value_key,
    c.host,
    c.conn_id,
    c.route,
    c.request_status,
    c.reply_request_id,
    c.owner_by_value,
    c.owner_by_digest,
    c.owner_by_connection,
    c.owner_by_key,
    c.line_id,
    c.item_no,
    c.crossed
FROM notable_items AS c
INNER JOIN source_files AS f
    ON c.file_no = f.file_no
LEFT JOIN granted_reads AS g
    ON c.line_id = g.line_id
    AND c.item_no = g.item_no
WHERE g.line_id IS NULL
    AND c.outcome = 'served'
    AND c.owner_id IS NOT NULL
    AND (c.viewer_id IS NULL OR c.viewer_id <> c.owner_id)
    AND (c.viewer_kind <> 'unknown' OR c.owner_by_key IS NULL OR c.owner_id <> c.owner_by_key);
