-- triples: one row per (owner, viewer, category), the only pass over the exposures; every list below is
-- aggregated from it (or from `pairs`) with plain GROUP BYs, which is far cheaper than count(DISTINCT ...)
-- over millions of exposure rows.
CREATE OR REPLACE TEMP TABLE triples AS
SELECT
    owner_id,
    viewer_key,
    category,
    any_value(viewer_id) AS viewer_id,
    min(viewer_kind) AS viewer_kind,
    any_value(session_id) AS session_id,
    count(*) AS exposure_count,
    min(ts) AS first_ts,
    max(ts) AS last_ts,
    max(severity_rank) AS severity_rank,
    CAST(sum(ev_value_owner) AS BIGINT) AS vo,
    CAST(sum(ev_digest) AS BIGINT) AS dg,
    CAST(sum(ev_connection) AS BIGINT) AS cn,
    CAST(sum(ev_key) AS BIGINT) AS ky,
    CAST(sum(ev_digest_ambiguous) AS BIGINT) AS da,
    CAST(sum(ev_conflict) AS BIGINT) AS cf,
    CAST(sum(ev_other) AS BIGINT) AS ot
FROM exposure_rows
GROUP BY owner_id, viewer_key, category;
