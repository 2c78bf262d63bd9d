-- notify: one row per (category, owner): the per-category notification lists (notify/<category>.csv), from
-- triples. severity: the highest among that owner's exposures of that category; directory_rows and
-- strongest_evidence as in affected_users, within the category.
CREATE OR REPLACE TEMP TABLE notify AS
WITH per_owner_category AS (
    SELECT
        category,
        owner_id,
        min(first_ts) AS first_exposed,
        max(last_ts) AS last_exposed,
        CAST(sum(exposure_count) AS BIGINT) AS exposure_count,
        count(*) AS viewer_count,
        max(severity_rank) AS severity_rank,
        sum(vo) AS vo, sum(dg) AS dg, sum(cn) AS cn, sum(ky) AS ky, sum(da) AS da, sum(cf) AS cf, sum(ot) AS ot
    FROM triples
    GROUP BY category, owner_id
)
SELECT
    p.category,
    p.owner_id,
    u.email,
    u.name,
    u.country,
    u.locale,
    CASE WHEN (SELECT configured FROM directory_status) THEN u.user_id IS NOT NULL END AS in_directory,
    u.directory_rows,
    p.first_exposed,
    p.last_exposed,
    p.exposure_count,
    p.viewer_count,
    severity_label(p.severity_rank) AS severity,
    strongest_evidence(p.vo, p.dg, p.cn, p.ky, p.da, p.cf, p.ot) AS strongest_evidence
FROM per_owner_category AS p
LEFT JOIN users_dir AS u ON u.user_id = p.owner_id
ORDER BY p.category, p.owner_id;
