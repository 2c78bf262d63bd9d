-- viewers: one row per viewer who was shown someone else's data, as the summary counts them (from pairs).
-- A signed-in viewer is one row per viewer_id (viewer_kind 'user'). An anonymous viewer is one row per session
-- (viewer_kind 'anonymous'), identified only by `session`, a short hash of the session id ("sha256:" + 16 hex
-- digits), because a session id can be a live credential; an anonymous request without any session is a row
-- of its own with an empty session. Exposures whose viewer the logs cannot name ('unknown': the request is
-- missing from the requests log; 'background': no request) are one row per request.
CREATE OR REPLACE TEMP TABLE viewers AS
SELECT
    any_value(viewer_id) AS viewer_id,
    count(*) AS owners_seen,
    list_sort(list_distinct(flatten(list(categories)))) AS categories,
    CAST(sum(exposure_count) AS BIGINT) AS exposure_count,
    min(first_ts) AS first_seen,
    max(last_ts) AS last_seen,
    CASE
        WHEN any_value(viewer_id) IS NOT NULL THEN 'user'
        ELSE coalesce(min(viewer_kind), 'anonymous')
    END AS viewer_kind,
    CASE
        WHEN any_value(viewer_id) IS NULL AND any_value(session_id) IS NOT NULL
            THEN 'sha256:' || left(sha256(any_value(session_id)), 16)
    END AS session,
    severity_label(max(severity_rank)) AS max_severity,
    CAST(sum(da) + sum(cf) AS BIGINT) AS flagged_rows
FROM pairs
GROUP BY viewer_key
ORDER BY viewer_id NULLS LAST, viewer_kind, session NULLS LAST, first_seen, viewer_key;
