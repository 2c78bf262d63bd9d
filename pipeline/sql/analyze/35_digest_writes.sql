-- digest_writes: every write that stored a value_sha256 under a key whose owner is known, numbered per digest
-- in log order (write_no), with the running smallest and largest owner among that digest's writes so far:
-- min <> max means the digest has been written under more than one owner by then.
-- A key of a family that names no owner (e.g. '^public:') is a known owner too: nobody. Its writes are listed
-- with digest_owner NULL and count as the owner '' in the running min and max (ingest makes an empty id NULL, so
-- '' is no one's id): bytes stored under a public key are public, and the same bytes written under alice's key
-- do not make an anonymous read of that public key alice's data (the digest is then ambiguous, as for two users).
-- Any status counts: a logged call was sent, and the server stores what a SET sent even when the client
-- abandoned the call (cancelled/timeout) or could not use its reply (error).
-- digest_items_line_id: the write's line when it is a multi-key write (15_cache_lines: key_multi), whose items
-- (12_cache_line_items) the digest then is (50_notable_reads splits a read of it item by item); else NULL.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW digest_writes AS
SELECT
    value_sha256,
    ts,
    key AS digest_key,
    key_owner AS digest_owner,
    key_category AS digest_category,
    key_severity AS digest_severity,
    CASE WHEN key_multi THEN line_id ELSE CAST(NULL AS BIGINT) END AS digest_items_line_id,
    row_number() OVER (PARTITION BY value_sha256 ORDER BY ts NULLS LAST, line_id) AS write_no,
    min(coalesce(key_owner, '')) OVER (
        PARTITION BY value_sha256 ORDER BY ts NULLS LAST, line_id
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS min_owner_so_far,
    max(coalesce(key_owner, '')) OVER (
        PARTITION BY value_sha256 ORDER BY ts NULLS LAST, line_id
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS max_owner_so_far
FROM cache_lines
WHERE is_write_op
    AND value_sha256 IS NOT NULL
    AND (key_owner IS NOT NULL OR key_ownerless_family);
