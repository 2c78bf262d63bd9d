-- cache_lines: every cache log line, with
--   * line_id (file_no * 2^32 + source_line) and conn_no (07_connections; NULL without host or conn_id);
--   * what its op does (cache_ops: read / write / reset; anything else returns no data);
--   * the key's family (key_rule_matches, built from the config's [[keys]] by Python: first rule wins):
--     key_category, key_severity, and key_owner = the rule's owner group, or the owner of the rule's resource
--     group in ownership_intervals at the line's ts. No rule: 'uncategorized', severity 'unknown', no owner.
--     key_ownerless_family: the key's rule names neither an owner nor a resource (e.g. '^public:'): its values
--     are nobody's, so a value naming an owner is not that key's (50_notable_reads: crossed). Without a rule,
--     or a resource nobody owns, the key's owner is unknown, not "nobody".
-- materialize
CREATE OR REPLACE TEMPORARY VIEW cache_lines AS
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
    coalesce(k.category, 'uncategorized') AS key_category,
    coalesce(k.severity, 'unknown') AS key_severity,
    coalesce(k.owner_from_key, oi.owner_id) AS key_owner,
    coalesce(NOT k.names_owner, false) AS key_ownerless_family
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
    AND (oi.valid_to IS NULL OR c.ts < oi.valid_to);
