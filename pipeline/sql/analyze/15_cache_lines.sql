-- cache_lines: every cache log line, with
--   * line_id (file_no * 2^32 + source_line) and conn_no (07_connections; NULL without host or conn_id);
--   * what its op does (cache_ops: read / write / reset; anything else returns no data);
--   * the key's family (key_rule_matches, built from the config's [[keys]] by Python: first rule wins):
--     key_category, key_severity, and key_owner = the rule's owner group, or the owner of the rule's resource
--     group in ownership_intervals at the line's ts. No rule: 'uncategorized', severity 'unknown', no owner.
--     key_ownerless_family: the key's rule names neither an owner nor a resource (e.g. '^public:'): its values
--     are nobody's, so a value naming an owner is not that key's (50_notable_reads: crossed). Without a rule,
--     or a resource nobody owns, the key's owner is unknown, not "nobody".
--   * key_multi: a multi-key call (its key is a JSON array of strings: 12_cache_line_items holds its items).
--     Its key_owner is the items' common owner when every item has one and it is the same, else NULL; its
--     key_category the items' common category, else 'multiple'; its key_severity the items' common severity,
--     else the highest of them (low < medium < high < critical; 'unknown' lowest); key_ownerless_family when
--     every item's family names nobody. The items are what 52_notable_items judges one by one; the line's own
--     figures serve where a call counts as one (a reply call's owner, a discarded reply, a near miss).
-- Cost: multi-key lines are few: they are grouped per line apart and LEFT JOINed to the lines (a small table).
-- materialize
CREATE OR REPLACE TEMPORARY VIEW cache_lines AS
WITH multi_key_lines AS (
    SELECT
        line_id,
        CASE
            WHEN count(item_owner) = count(*) AND min(item_owner) = max(item_owner) THEN min(item_owner)
            ELSE CAST(NULL AS STRING)
        END AS key_owner,
        CASE WHEN min(item_category) = max(item_category) THEN min(item_category) ELSE 'multiple' END
            AS key_category,
        CASE
            WHEN min(item_severity) = max(item_severity) THEN min(item_severity)
            ELSE CASE max(
                    CASE item_severity WHEN 'low' THEN 1 WHEN 'medium' THEN 2 WHEN 'high' THEN 3
                        WHEN 'critical' THEN 4 ELSE 0 END
                )
                WHEN 4 THEN 'critical' WHEN 3 THEN 'high' WHEN 2 THEN 'medium' WHEN 1 THEN 'low' ELSE 'unknown'
            END
        END AS key_severity,
        CASE WHEN min(CASE WHEN item_ownerless_family THEN 1 ELSE 0 END) = 1 THEN true ELSE false END
            AS key_ownerless_family
    FROM cache_line_items
    GROUP BY line_id
)
SELECT
    f.file_no * 4294967296 + c.source_line AS line_id,
    f.file_no,
    c.source_line,
    c.ts,
    c.request_id,
    c.op,
    c.key,
    coalesce(c.status, 'ok') AS status,
    c.host,
    c.conn_id,
    n.conn_no,
    c.value_sha256,
    c.value_owner,
    coalesce(o.is_read, false) AS is_read_op,
    coalesce(o.is_write, false) AS is_write_op,
    coalesce(o.is_reset, false) AS is_reset_op,
    CASE WHEN m.line_id IS NULL THEN coalesce(k.category, 'uncategorized') ELSE m.key_category END AS key_category,
    CASE WHEN m.line_id IS NULL THEN coalesce(k.severity, 'unknown') ELSE m.key_severity END AS key_severity,
    CASE WHEN m.line_id IS NULL THEN coalesce(k.owner_from_key, oi.owner_id) ELSE m.key_owner END AS key_owner,
    CASE
        WHEN m.line_id IS NULL THEN coalesce(NOT k.names_owner, false) ELSE m.key_ownerless_family
    END AS key_ownerless_family,
    CASE WHEN m.line_id IS NULL THEN false ELSE true END AS key_multi
FROM cache_lake AS c
INNER JOIN source_files AS f
    ON c.source_file = f.source_file
LEFT JOIN connections AS n
    ON c.host = n.host
    AND c.conn_id = n.conn_id
LEFT JOIN cache_ops AS o
    ON c.op = o.op
LEFT JOIN key_rule_matches AS k
    ON c.key = k.key
LEFT JOIN ownership_intervals AS oi
    ON k.resource_id = oi.resource_id
    AND (oi.valid_from IS NULL OR oi.valid_from <= c.ts)
    AND (oi.valid_to IS NULL OR c.ts < oi.valid_to)
LEFT JOIN multi_key_lines AS m
    ON f.file_no * 4294967296 + c.source_line = m.line_id;
