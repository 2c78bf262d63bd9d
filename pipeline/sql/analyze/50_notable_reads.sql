-- notable_reads: every reading call that matters for the outputs, judged: crossed, flagged (conflict or
-- digest-ambiguous), of unknown viewer, or carrying a value whose owner is not its viewer. Each with the
-- owner of the value it received, by evidence tier (docs/design.md "Owner of a served item"), the value's
-- key and category, and what became of it. (Ordinary reads, a viewer's own data, are judged the same way
-- but not kept: counts of served items come from cache_lines.)
--   owner_by_value       the logged value_owner;
--   owner_by_digest      the latest earlier write of the same digest (38_digest_profiles, 40_digest_as_of;
--                        NULL when that digest is ambiguous); read ops only: a write's value_sha256 is the
--                        hash of what it stored, not of the reply it got;
--   owner_by_connection  when the read received another call's reply (FIFO rule) and that reply was data
--                        (the reply call was a read op): the owner of that call's key. A read that got its
--                        own reply learns nothing here beyond its key (tier 4);
--   owner_by_key         the owner of the key asked for; it decides only when the value can be that key's
--                        (the connection does not show another call's reply: a crossed reply of a key
--                        without owner, e.g. a public one, carries nobody's data).
-- owner_id = the strongest tier that names an owner; evidence names it, or says 'conflict' when tiers 1-3
-- name different owners (or the connection says no data came back but the value names an owner), or
-- 'digest-ambiguous' when the digest names several owners and no value_owner decides.
-- value_key / category / severity: of the value served: the digest's key, else the reply call's key, else
-- the key asked for.
-- crossed: the read received another call's reply, or its value names another owner than its key's.
-- outcome: 'served' (a read op, status ok, data came back, the request answered below 500: a served item
-- that reached its viewer), 'failed' (status error: the client threw the reply away and reset; or the
-- request answered 5xx), 'not-data' (the reading op is no read op, or the reply it got was no data),
-- 'background' (no request).
-- materialize
CREATE OR REPLACE TEMPORARY VIEW notable_reads AS
WITH digest_matches AS (
    SELECT
        v.*,
        CASE WHEN p.single_key THEN p.digest_key ELSE a.digest_key END AS digest_key,
        CASE WHEN p.single_key THEN p.digest_owner ELSE a.digest_owner END AS digest_owner,
        CASE WHEN p.single_key THEN p.digest_category ELSE a.digest_category END AS digest_category,
        CASE WHEN p.single_key THEN p.digest_severity ELSE a.digest_severity END AS digest_severity,
        CASE WHEN p.single_key THEN false ELSE coalesce(a.digest_ambiguous, false) END AS digest_ambiguous
    FROM read_viewers AS v
    LEFT JOIN digest_profiles AS p
        ON v.value_sha256 = p.value_sha256
        AND p.first_write_ts <= v.ts
        AND v.is_read_op
    LEFT JOIN digest_as_of AS a
        ON v.line_id = a.line_id
),
tiers AS (
    SELECT
        digest_matches.*,
        value_owner AS owner_by_value,
        CASE WHEN digest_ambiguous THEN CAST(NULL AS STRING) ELSE digest_owner END AS owner_by_digest,
        CASE WHEN reply_is_read_op THEN reply_key_owner ELSE CAST(NULL AS STRING) END AS owner_by_connection,
        key_owner AS owner_by_key,
        CASE WHEN reply_line_id IS NOT NULL THEN true ELSE false END AS crossed_by_connection,
        CASE WHEN reply_line_id IS NOT NULL AND NOT reply_is_read_op THEN true ELSE false END AS reply_not_data
    FROM digest_matches
),
judged_reads AS (
    SELECT
        tiers.*,
        CASE
            WHEN owner_by_value IS NOT NULL AND owner_by_digest IS NOT NULL
                AND owner_by_value <> owner_by_digest THEN true
            WHEN owner_by_value IS NOT NULL AND owner_by_connection IS NOT NULL
                AND owner_by_value <> owner_by_connection THEN true
            WHEN owner_by_digest IS NOT NULL AND owner_by_connection IS NOT NULL
                AND owner_by_digest <> owner_by_connection THEN true
            WHEN reply_not_data AND is_read_op
                AND (owner_by_value IS NOT NULL OR owner_by_digest IS NOT NULL) THEN true
            ELSE false
        END AS tiers_conflict,
        coalesce(
            owner_by_value,
            owner_by_digest,
            owner_by_connection,
            CASE WHEN crossed_by_connection THEN CAST(NULL AS STRING) ELSE owner_by_key END
        ) AS owner_id,
        CASE
            WHEN crossed_by_connection THEN true
            WHEN owner_by_value IS NOT NULL AND owner_by_key IS NOT NULL
                AND owner_by_value <> owner_by_key THEN true
            WHEN owner_by_digest IS NOT NULL AND owner_by_key IS NOT NULL
                AND owner_by_digest <> owner_by_key THEN true
            ELSE false
        END AS crossed,
        CASE
            WHEN owner_by_digest IS NOT NULL THEN digest_key
            WHEN crossed_by_connection AND reply_is_read_op THEN reply_key
            ELSE key
        END AS value_key,
        CASE
            WHEN owner_by_digest IS NOT NULL THEN digest_category
            WHEN crossed_by_connection AND reply_is_read_op THEN reply_key_category
            ELSE key_category
        END AS category,
        CASE
            WHEN owner_by_digest IS NOT NULL THEN digest_severity
            WHEN crossed_by_connection AND reply_is_read_op THEN reply_key_severity
            ELSE key_severity
        END AS severity
    FROM tiers
)
SELECT
    line_id,
    file_no,
    source_line,
    ts,
    request_id,
    session_id,
    viewer_id,
    viewer_kind,
    owner_id,
    key,
    category,
    severity,
    CASE
        WHEN tiers_conflict THEN 'conflict'
        WHEN owner_by_value IS NOT NULL THEN 'value_owner'
        WHEN digest_ambiguous THEN 'digest-ambiguous'
        WHEN owner_by_digest IS NOT NULL THEN 'digest'
        WHEN owner_by_connection IS NOT NULL THEN 'connection'
        WHEN crossed_by_connection THEN 'connection'
        WHEN owner_by_key IS NOT NULL THEN 'key'
        ELSE CAST(NULL AS STRING)
    END AS evidence,
    value_key,
    host,
    conn_id,
    route,
    request_status,
    CASE WHEN crossed_by_connection THEN reply_request_id ELSE CAST(NULL AS STRING) END AS reply_request_id,
    owner_by_value,
    owner_by_digest,
    owner_by_connection,
    owner_by_key,
    crossed,
    crossed_by_connection,
    reply_not_data,
    reply_key_category,
    reply_key_owner,
    CASE
        WHEN status = 'error' THEN 'failed'
        WHEN NOT is_read_op THEN 'not-data'
        WHEN status <> 'ok' THEN 'failed'
        WHEN reply_not_data AND owner_by_value IS NULL AND owner_by_digest IS NULL THEN 'not-data'
        WHEN request_id IS NULL THEN 'background'
        WHEN request_failed THEN 'failed'
        ELSE 'served'
    END AS outcome,
    CASE WHEN is_read_op AND status = 'ok' THEN true ELSE false END AS is_served_item
FROM judged_reads
WHERE crossed
    OR tiers_conflict
    OR digest_ambiguous
    OR viewer_kind = 'unknown'
    OR (owner_id IS NOT NULL AND (viewer_id IS NULL OR viewer_id <> owner_id));
