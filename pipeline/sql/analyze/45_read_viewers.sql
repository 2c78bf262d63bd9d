-- read_viewers: every reading call with the digest tier of what it read (43_read_digests), its request and its
-- viewer at the instant of the read.
-- Viewer (docs/design.md "Viewer"): the request's session at the read's ts in session_holders (equi + range
-- join on disjoint intervals: at most one match): login/refresh -> that user (or, if the event carries no
-- user, the request's user_id); logout/expire -> nobody, from just after its instant (20_session_holders). No
-- session event at or before the read, or no sessions log: the request's user_id. No user: anonymous.
-- request_user_id: the user_id the request carried (the viewer when no session event decides; the summary counts
-- exposures where the two differ).
-- viewer_kind: 'session' | 'request' (where the viewer came from: a session event that names a user, else the
-- request's user_id, also under a login/refresh that names nobody), 'anonymous', or 'unknown' (the read's
-- request is not in the requests log: kept and counted, never dropped), 'background' (no request at all).
-- Cost: one chain of LEFT JOINs onto the reads (crossed replies, digests, requests, sessions), each hashing the
-- table on its right; 50_notable_reads, which runs the chain, asks DuckDB to keep those sides.
CREATE OR REPLACE TEMPORARY VIEW read_viewers AS
WITH reads_with_requests AS (
    SELECT
        c.*,
        q.request_id AS logged_request_id,
        q.session_id,
        q.user_id AS request_user_id,
        q.route,
        q.status AS request_status,
        q.request_failed,
        h.holding,
        h.holder_user_id
    FROM read_digests AS c
    LEFT JOIN request_log AS q
        ON c.request_id = q.request_id
    LEFT JOIN session_holders AS h
        ON q.session_id = h.session_id
        AND h.valid_from <= c.ts
        AND (h.valid_to IS NULL OR c.ts < h.valid_to)
)
SELECT
    line_id,
    ts,
    request_id,
    status,
    value_owner,
    is_read_op,
    key_owner,
    key_ownerless_family,
    key_multi,
    reply_line_id,
    reply_key,
    reply_is_read_op,
    reply_key_owner,
    reply_key_category,
    reply_key_severity,
    reply_key_multi,
    reply_request_id,
    digest_key,
    digest_owner,
    digest_category,
    digest_severity,
    digest_items_line_id,
    digest_ambiguous,
    session_id,
    request_user_id,
    route,
    request_status,
    request_failed,
    CASE
        WHEN logged_request_id IS NULL THEN CAST(NULL AS STRING)
        WHEN holding = false THEN CAST(NULL AS STRING)
        WHEN holding = true THEN coalesce(holder_user_id, request_user_id)
        ELSE request_user_id
    END AS viewer_id,
    CASE
        WHEN request_id IS NULL THEN 'background'
        WHEN logged_request_id IS NULL THEN 'unknown'
        WHEN holding = false THEN 'anonymous'
        WHEN holding = true AND holder_user_id IS NOT NULL THEN 'session'
        WHEN request_user_id IS NOT NULL THEN 'request'
        ELSE 'anonymous'
    END AS viewer_kind
FROM reads_with_requests;
