-- granted_reads: items served (52_notable_items: a read, or one item of a multi-key value) whose viewer may
-- legitimately see the owner's data: a grant of that owner (or '*', every owner: support staff's access) to
-- that viewer (or '*', anyone, anonymous included), for that category (or '*' / empty = every category), valid
-- at the read's ts (valid_from <= ts < valid_to, either end open), and, when the grant names a resource_id (a
-- share link shares one conversation, not every one of its owner's), only for a value of that resource: the
-- resource group of the key the value was written under (value_key's [[keys]] rule; a value of a key without
-- one is no resource's). Only items shown to someone else than their owner are looked at. Identity:
-- (line_id, item_no). (A grant of everything to anyone is refused when the table is read: it would excuse every
-- exposure.) The grants are few: the OR makes a small nested-loop join.
CREATE OR REPLACE TEMPORARY VIEW granted_reads AS
SELECT DISTINCT c.line_id, c.item_no
FROM notable_items AS c
LEFT JOIN key_rule_matches AS k
    ON c.value_key = k.key
INNER JOIN grants_table AS g
    ON c.owner_id = g.owner_id OR g.owner_id = '*'
WHERE (c.viewer_id IS NULL OR c.viewer_id <> c.owner_id)
    AND (g.viewer_id = '*' OR g.viewer_id = c.viewer_id)
    AND (g.category IS NULL OR g.category = '*' OR g.category = c.category)
    AND (g.resource_id IS NULL OR g.resource_id = k.resource_id)
    AND (g.valid_from IS NULL OR g.valid_from <= c.ts)
    AND (g.valid_to IS NULL OR c.ts < g.valid_to);
