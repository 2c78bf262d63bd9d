-- The exposures as the report reads them: one row per exposure (view `exposures` over exposures.parquet),
-- plus the keys the aggregations group and rank by. Nothing is copied here.
--   viewer_key      who saw it, as the summary counts viewers: a signed-in user by viewer_id; an anonymous
--                   viewer by session (a request without any session is its own viewer: nothing links two
--                   of them); a viewer the logs cannot name (viewer_kind 'unknown': the request is missing
--                   from the requests log; 'background': no request) by its request.
--   severity_rank   low 1 < medium 2 < high 3 < critical 4 (0: 'unknown' or none); severity_label() maps back.
--   ev_*            one flag per evidence label, so later steps count rows per tier with plain sums:
--                   value_owner > digest > connection > key, then the flagged labels digest-ambiguous and
--                   conflict (the analysis could not settle the owner cleanly), then any other label.
CREATE OR REPLACE TEMP MACRO severity_label(r) AS
    CASE r WHEN 1 THEN 'low' WHEN 2 THEN 'medium' WHEN 3 THEN 'high' WHEN 4 THEN 'critical' ELSE 'unknown' END;

-- The strongest clean tier with rows; a flagged label only when every row is flagged.
CREATE OR REPLACE TEMP MACRO strongest_evidence(vo, dg, cn, ky, da, cf, ot) AS
    CASE
        WHEN vo > 0 THEN 'value_owner' WHEN dg > 0 THEN 'digest' WHEN cn > 0 THEN 'connection'
        WHEN ky > 0 THEN 'key' WHEN da > 0 THEN 'digest-ambiguous' WHEN cf > 0 THEN 'conflict'
        WHEN ot > 0 THEN 'other'
    END;

-- "value_owner=3;key=1": rows per evidence label, strongest first, labels without rows left out.
CREATE OR REPLACE TEMP MACRO evidence_counts(vo, dg, cn, ky, da, cf, ot) AS
    concat_ws(';',
        CASE WHEN vo > 0 THEN 'value_owner=' || vo END, CASE WHEN dg > 0 THEN 'digest=' || dg END,
        CASE WHEN cn > 0 THEN 'connection=' || cn END, CASE WHEN ky > 0 THEN 'key=' || ky END,
        CASE WHEN da > 0 THEN 'digest-ambiguous=' || da END, CASE WHEN cf > 0 THEN 'conflict=' || cf END,
        CASE WHEN ot > 0 THEN 'other=' || ot END);

CREATE OR REPLACE TEMP VIEW exposure_rows AS
SELECT
    e.*,
    CASE
        WHEN e.viewer_id IS NOT NULL THEN 'user:' || e.viewer_id
        WHEN coalesce(e.viewer_kind, 'anonymous') = 'anonymous' AND e.session_id IS NOT NULL
            THEN 'anonymous:session:' || e.session_id
        ELSE coalesce(e.viewer_kind, 'anonymous') || ':request:'
            || coalesce(e.request_id, e.source_file || ':' || CAST(e.source_line AS VARCHAR))
    END AS viewer_key,
    CASE lower(e.severity)
        WHEN 'low' THEN 1 WHEN 'medium' THEN 2 WHEN 'high' THEN 3 WHEN 'critical' THEN 4 ELSE 0
    END AS severity_rank,
    CAST(e.evidence = 'value_owner' AS INTEGER) AS ev_value_owner,
    CAST(e.evidence = 'digest' AS INTEGER) AS ev_digest,
    CAST(e.evidence = 'connection' AS INTEGER) AS ev_connection,
    CAST(e.evidence = 'key' AS INTEGER) AS ev_key,
    CAST(e.evidence = 'digest-ambiguous' AS INTEGER) AS ev_digest_ambiguous,
    CAST(e.evidence = 'conflict' AS INTEGER) AS ev_conflict,
    CAST(e.evidence IS NULL OR e.evidence NOT IN (
        'value_owner', 'digest', 'connection', 'key', 'digest-ambiguous', 'conflict') AS INTEGER) AS ev_other
FROM exposures AS e;
