-- pairs: one row per (owner, viewer) pair, from triples.
CREATE OR REPLACE TEMP TABLE pairs AS
SELECT
    owner_id,
    viewer_key,
    any_value(viewer_id) AS viewer_id,
    min(viewer_kind) AS viewer_kind,
    any_value(session_id) AS session_id,
    list(category) AS categories,
    CAST(sum(exposure_count) AS BIGINT) AS exposure_count,
    min(first_ts) AS first_ts,
    max(last_ts) AS last_ts,
    max(severity_rank) AS severity_rank,
    CAST(sum(vo) AS BIGINT) AS vo,
    CAST(sum(dg) AS BIGINT) AS dg,
    CAST(sum(cn) AS BIGINT) AS cn,
    CAST(sum(ky) AS BIGINT) AS ky,
    CAST(sum(da) AS BIGINT) AS da,
    CAST(sum(cf) AS BIGINT) AS cf,
    CAST(sum(ot) AS BIGINT) AS ot
FROM triples
GROUP BY owner_id, viewer_key;
