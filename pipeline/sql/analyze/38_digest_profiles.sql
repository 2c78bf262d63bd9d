-- digest_profiles: per digest written under a key with a known owner: when it was first written, under how
-- many keys and owners, and (when that is one key and one owner, the usual case) which. Such a digest needs
-- no "as of" search: any write at or before a read is that key's, so an equi-join on the digest and
-- first_write_ts <= ts decide the digest tier (50_notable_reads).
-- A digest written only under a key whose family names nobody (35_digest_writes: digest_owner NULL) names no
-- owner: digest_owner NULL.
-- digest_items_line_id: for a digest of one multi-key key, one of its writes' lines (35_digest_writes): any
-- will do, the items depend on the key only (an owner named by the line is every item's owner).
-- materialize
CREATE OR REPLACE TEMPORARY VIEW digest_profiles AS
SELECT
    value_sha256,
    min(ts) AS first_write_ts,
    CASE
        WHEN count(DISTINCT digest_key) = 1 AND count(DISTINCT coalesce(digest_owner, '')) = 1 THEN true ELSE false
    END AS single_key,
    min(digest_key) AS digest_key,
    min(digest_owner) AS digest_owner,
    min(digest_category) AS digest_category,
    min(digest_severity) AS digest_severity,
    min(digest_items_line_id) AS digest_items_line_id
FROM digest_writes
GROUP BY value_sha256;
