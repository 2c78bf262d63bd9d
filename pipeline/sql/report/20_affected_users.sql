-- affected_users: one row per owner whose data was exposed inside the window, joined with the users directory
-- (view `users_dir`: one row per user_id; empty when the config names none). SPEC columns first, then:
--   locale; in_directory (NULL when no directory was given); directory_rows (the user's rows in the directory: more
--   than 1, and the first was used: check which address to write to); max_severity; strongest_evidence (the strongest
--   clean tier among the owner's rows, a flagged label only when every row of the owner is flagged);
--   flagged_rows (digest-ambiguous + conflict); evidence_counts ("digest=3;key=1", strongest first).
CREATE OR REPLACE TEMP TABLE affected_users AS
WITH per_owner AS (
    SELECT
        owner_id,
        list_sort(list_distinct(flatten(list(categories)))) AS categories,
        CAST(sum(exposure_count) AS BIGINT) AS exposure_count,
        count(*) AS viewer_count,
        min(first_ts) AS first_exposed,
        max(last_ts) AS last_exposed,
        max(severity_rank) AS severity_rank,
        sum(vo) AS vo, sum(dg) AS dg, sum(cn) AS cn, sum(ky) AS ky, sum(da) AS da, sum(cf) AS cf, sum(ot) AS ot
    FROM pairs
    GROUP BY owner_id
)
SELECT
    o.owner_id,
    u.email,
    u.name,
    u.country,
    o.categories,
    o.exposure_count,
    o.viewer_count,
    o.first_exposed,
    o.last_exposed,
    u.locale,
    CASE WHEN (SELECT configured FROM directory_status) THEN u.user_id IS NOT NULL END AS in_directory,
    u.directory_rows,
    severity_label(o.severity_rank) AS max_severity,
    strongest_evidence(o.vo, o.dg, o.cn, o.ky, o.da, o.cf, o.ot) AS strongest_evidence,
    CAST(o.da + o.cf AS BIGINT) AS flagged_rows,
    evidence_counts(o.vo, o.dg, o.cn, o.ky, o.da, o.cf, o.ot) AS evidence_counts
FROM per_owner AS o
LEFT JOIN users_dir AS u ON u.user_id = o.owner_id
ORDER BY o.owner_id;
