-- notable_items: the notable reads (50_notable_reads, one row per reading call) as items served: a read whose
-- value is the items of a multi-key call (items_line_id: the reply call it received, or the read itself;
-- docs/design.md "Multi-key calls") becomes one row per item of that call (12_cache_line_items), item_no 1..n,
-- each judged as a single-key read would be: owner_id = the item's owner (the connection tier when the read
-- received the call's reply, else the key tier), category, severity and value_key = the item's, evidence
-- 'value_owner' or 'digest' for the item whose owner the value names, else 'connection' or 'key' (or the read's
-- 'digest-ambiguous'). The items of a multi-key write whose digest the value had (items_by_digest) are judged
-- by the digest, evidence 'digest' (or 'value_owner' when it names them too); the read keeps its own
-- owner_by_connection and owner_by_key. Every other read passes through as one row,
-- item_no 0. Grants (55) and exposures (60) count these rows: identity (line_id, item_no). Crossed replies and
-- near misses stay counted per call, from notable_reads.
-- Cost: only the (few) reads with an items_line_id are joined; the rest is a plain pass over notable_reads.
CREATE OR REPLACE TEMPORARY VIEW notable_items AS
SELECT
    line_id,
    0 AS item_no,
    file_no,
    source_line,
    ts,
    request_id,
    session_id,
    viewer_id,
    viewer_kind,
    owner_id,
    key,
    category,
    severity,
    evidence,
    value_key,
    host,
    conn_id,
    route,
    request_status,
    reply_request_id,
    owner_by_value,
    owner_by_digest,
    owner_by_connection,
    owner_by_key,
    crossed,
    outcome,
    is_served_item
FROM notable_reads
WHERE items_line_id IS NULL
UNION ALL
SELECT
    n.line_id,
    i.item_no,
    n.file_no,
    n.source_line,
    n.ts,
    n.request_id,
    n.session_id,
    n.viewer_id,
    n.viewer_kind,
    i.item_owner AS owner_id,
    n.key,
    i.item_category AS category,
    i.item_severity AS severity,
    CASE
        WHEN n.evidence IN ('digest-ambiguous', 'conflict') THEN n.evidence
        WHEN n.owner_by_value IS NOT NULL AND n.owner_by_value = i.item_owner THEN 'value_owner'
        WHEN n.owner_by_digest IS NOT NULL AND n.owner_by_digest = i.item_owner THEN 'digest'
        WHEN n.crossed_by_connection THEN 'connection'
        WHEN i.item_owner IS NOT NULL THEN 'key'
        ELSE CAST(NULL AS STRING)
    END AS evidence,
    i.item_key AS value_key,
    n.host,
    n.conn_id,
    n.route,
    n.request_status,
    n.reply_request_id,
    n.owner_by_value,
    n.owner_by_digest,
    CASE
        WHEN n.crossed_by_connection AND NOT n.items_by_digest THEN i.item_owner
        ELSE n.owner_by_connection
    END AS owner_by_connection,
    CASE WHEN n.crossed_by_connection OR n.items_by_digest THEN n.owner_by_key ELSE i.item_owner END AS owner_by_key,
    n.crossed,
    n.outcome,
    n.is_served_item
FROM notable_reads AS n
INNER JOIN cache_line_items AS i
    ON n.items_line_id = i.line_id;
