-- cache_line_items: one row per item of every multi-key cache line (docs/design.md "Multi-key calls"): a call
-- for several keys logged as one line whose key is a JSON array of strings (MGET ["user:alice:titles",
-- "billing:alice"]). Python split those keys into their items (multi_keys, key_items: engine-specific JSON);
-- here each item gets what 15_cache_lines gives a plain key: item_category, item_severity, item_owner = the
-- item's rule's owner group, or the owner of its resource group in ownership_intervals at the line's ts (no
-- rule: 'uncategorized', 'unknown', no owner), item_ownerless_family (a rule naming neither). item_no: the
-- item's place in the array, from 1. line_id as 15_cache_lines numbers lines.
-- Cost: multi-key lines are few; the lake is joined to the small multi_keys first (hashed), and with no
-- multi-key key at all that join is empty at once.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW cache_line_items AS
WITH multi_key_lines AS (
    SELECT
        c.source_file,
        c.source_line,
        c.ts,
        m.key_no
    FROM cache_lake AS c
    INNER JOIN multi_keys AS m
        ON c.key = m.key
)
SELECT
    f.file_no * 4294967296 + l.source_line AS line_id,
    i.item_no,
    i.item_key,
    coalesce(k.category, 'uncategorized') AS item_category,
    coalesce(k.severity, 'unknown') AS item_severity,
    coalesce(k.owner_from_key, oi.owner_id) AS item_owner,
    coalesce(NOT k.names_owner, false) AS item_ownerless_family
FROM multi_key_lines AS l
INNER JOIN source_files AS f
    ON l.source_file = f.source_file
INNER JOIN key_items AS i
    ON l.key_no = i.key_no
LEFT JOIN key_rule_matches AS k
    ON i.item_key = k.key
LEFT JOIN ownership_intervals AS oi
    ON k.resource_id = oi.resource_id
    AND (oi.valid_from IS NULL OR oi.valid_from <= l.ts)
    AND (oi.valid_to IS NULL OR l.ts < oi.valid_to);
