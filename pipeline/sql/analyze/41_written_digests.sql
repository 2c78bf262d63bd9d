-- written_digests: every reading call (33_reading_calls) with the digest tier of what it read, as the writes
-- tell it (docs/design.md "Owner of a served item", tier 2; 43_read_digests adds what reads tell): the latest
-- write of the same value_sha256 at or before the read, under a key with a known owner: digest_key,
-- digest_owner, digest_category, digest_severity, digest_items_line_id (that write's line when it was a
-- multi-key write: its items are the value) and digest_ambiguous (by then the digest had been written under more
-- than one owner). Read ops only: a write's value_sha256 is the hash of what it stored, not of the reply it got.
-- A digest written under one key and owner (38_digest_profiles: single_key, the usual case) is decided by
-- an equi-join and first_write_ts <= ts; the others by 40_digest_as_of.
CREATE OR REPLACE TEMPORARY VIEW written_digests AS
SELECT
    c.line_id,
    c.ts,
    c.value_sha256,
    c.request_id,
    c.status,
    c.value_owner,
    c.is_read_op,
    c.key_owner,
    c.key_ownerless_family,
    c.key_multi,
    c.reply_line_id,
    c.reply_key,
    c.reply_is_read_op,
    c.reply_key_owner,
    c.reply_key_category,
    c.reply_key_severity,
    c.reply_key_multi,
    c.reply_request_id,
    CASE WHEN p.single_key THEN p.digest_key ELSE a.digest_key END AS digest_key,
    CASE WHEN p.single_key THEN p.digest_owner ELSE a.digest_owner END AS digest_owner,
    CASE WHEN p.single_key THEN p.digest_category ELSE a.digest_category END AS digest_category,
    CASE WHEN p.single_key THEN p.digest_severity ELSE a.digest_severity END AS digest_severity,
    CASE WHEN p.single_key THEN p.digest_items_line_id ELSE a.digest_items_line_id END AS digest_items_line_id,
    CASE WHEN p.single_key THEN false ELSE coalesce(a.digest_ambiguous, false) END AS digest_ambiguous
FROM reading_calls AS c
LEFT JOIN digest_profiles AS p
    ON c.value_sha256 = p.value_sha256
    AND p.first_write_ts <= c.ts
    AND c.is_read_op
LEFT JOIN digest_as_of AS a
    ON c.line_id = a.line_id;
