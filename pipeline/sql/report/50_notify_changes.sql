-- notify_changes: what changed in the notification lists (notify/<category>.csv) since the previous report, the
-- newest one kept in history/ (table previous_notify: the (category, owner_id) rows of its lists; empty when
-- there is none). One row per change of one list:
--   'added':   an owner on a list now who was not on that list before (a notice to send), with the list's row;
--   'removed': an owner on a list before who is not on it now (perhaps told already), with the users directory's
--              contact columns and a reason: 'outside_window' when the owner's data of that category is still
--              exposed, but only outside this analysis' window (exposures_outside), with first_exposed,
--              last_exposed and exposure_count of those exposures; else 'not_found' (no exposure of that category at all).
-- A NULL category is the uncategorized list.
CREATE OR REPLACE TEMP TABLE notify_changes AS
WITH previous_rows AS (
    SELECT DISTINCT category, owner_id FROM previous_notify
),
outside_window AS (
    SELECT category, owner_id, min(ts) AS first_exposed, max(ts) AS last_exposed, count(*) AS exposure_count
    FROM exposures_outside
    GROUP BY ALL
),
added AS (
    SELECT 'added' AS change, CAST(NULL AS VARCHAR) AS reason, n.*
    FROM notify AS n
    WHERE NOT EXISTS (
        SELECT 1 FROM previous_rows AS p WHERE p.owner_id = n.owner_id AND p.category IS NOT DISTINCT FROM n.category
    )
),
removed AS (
    SELECT
        'removed' AS change,
        CASE WHEN o.owner_id IS NULL THEN 'not_found' ELSE 'outside_window' END AS reason,
        p.category,
        p.owner_id,
        u.email,
        u.name,
        u.country,
        u.locale,
        CASE WHEN (SELECT configured FROM directory_status) THEN u.user_id IS NOT NULL END AS in_directory,
        u.directory_rows,
        o.first_exposed,
        o.last_exposed,
        o.exposure_count
    FROM previous_rows AS p
    LEFT JOIN users_dir AS u ON u.user_id = p.owner_id
    LEFT JOIN outside_window AS o ON o.owner_id = p.owner_id AND o.category IS NOT DISTINCT FROM p.category
    WHERE NOT EXISTS (
        SELECT 1 FROM notify AS n WHERE n.owner_id = p.owner_id AND n.category IS NOT DISTINCT FROM p.category
    )
)
SELECT * FROM added
UNION ALL BY NAME
SELECT * FROM removed
ORDER BY change, category NULLS FIRST, owner_id;
