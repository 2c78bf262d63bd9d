-- digests_read_as_own: digests that a read received as its own key's value while the writes name another owner
-- (docs/design.md "Owner of a served item", tier 2): the bytes are that key's owner's too, a value many users
-- share (an empty list, a default), so they identify nobody. Per digest: first_read_ts, the first such read,
-- and reads, how many.
-- Such a read: a read op, status ok, single key, on a connection that shows it received its own reply (no
-- unanswered call before it: 30_crossed_replies lists none) on a host whose log records abandoned calls (one
-- cancelled or timed out call at least; without any, the log does not show them and the FIFO rule proves
-- nothing); the writes name one owner (written_digests: not ambiguous, not a multi-key write), the key names
-- another (or nobody: a public key), and no value_owner names the digest's owner.
-- Small (rare reads, one row per digest), so it is materialised.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW digests_read_as_own AS
WITH hosts_logging_abandoned_calls AS (
    SELECT DISTINCT n.host
    FROM connection_segments AS s
    INNER JOIN connections AS n
        ON s.conn_no = n.conn_no
    WHERE s.is_abandoned = 1
),
witnessed_connections AS (
    SELECT n.conn_no
    FROM connections AS n
    INNER JOIN hosts_logging_abandoned_calls AS h
        ON n.host = h.host
)
SELECT
    d.value_sha256,
    min(d.ts) AS first_read_ts,
    count(*) AS reads
FROM written_digests AS d
INNER JOIN witnessed_connections AS w
    ON d.conn_no = w.conn_no
WHERE d.is_read_op
    AND d.status = 'ok'
    AND d.reply_line_id IS NULL
    AND NOT d.key_multi
    AND d.digest_owner IS NOT NULL
    AND NOT d.digest_ambiguous
    AND d.digest_items_line_id IS NULL
    AND (d.key_owner IS NOT NULL OR d.key_ownerless_family)
    AND (d.key_owner IS NULL OR d.key_owner <> d.digest_owner)
    AND (d.value_owner IS NULL OR d.value_owner <> d.digest_owner)
GROUP BY d.value_sha256;
