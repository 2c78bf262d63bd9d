-- digests_read_as_own: digests that a read received as its own key's value while the writes name another owner
-- (docs/design.md "Owner of a served item", tier 2): the bytes are that key's owner's too, a value many users
-- share (an empty list, a default), so they identify nobody. Per digest: first_read_ts, the first such read,
-- and reads, how many.
-- Such a read: a read op, status ok, single key, on a connection that shows it received its own reply (no
-- unanswered call before it: 30_crossed_replies lists none), on a host whose log records abandoned calls (one
-- cancelled or timed out call at least; without any, the log does not show them and the FIFO rule proves
-- nothing); the writes name one owner (as in 41_written_digests: a digest of one key by 38_digest_profiles, the
-- others by 40_digest_as_of; not ambiguous, not a multi-key write), the key names another (or nobody: a public
-- key), and no value_owner names the digest's owner. And one of:
--   * it comes after a reset or error logged on its connection (segment_no > 0, 25_connection_segments): before
--     the first, the log does not show the connection's beginning, and a reply left unread before the logs begin
--     shifts every read after it, so one read there proves nothing;
--   * such reads of the digest came under the keys of 3 owners or more (nobody counts as one) on 3 connections or
--     more: one misaligned connection, or a lost cancel, gives an owner's bytes to the next caller, not the same
--     bytes to many users' own keys on many connections. Then every such read counts, the first included.
-- Cost: the few columns of the reads that qualify meet the digests here, as in 41_written_digests, rather than
-- through written_digests, whose chain carries every column the judging needs.
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
),
own_replies AS (
    SELECT c.line_id, c.ts, c.conn_no, s.segment_no, c.value_sha256, c.key_owner, c.value_owner
    FROM connection_segments AS s
    INNER JOIN witnessed_connections AS w
        ON s.conn_no = w.conn_no
    INNER JOIN cache_lines AS c
        ON s.line_id = c.line_id
    LEFT JOIN crossed_replies AS x
        ON c.line_id = x.line_id
    WHERE c.is_read_op
        AND c.status = 'ok'
        AND NOT c.key_multi
        AND (c.key_owner IS NOT NULL OR c.key_ownerless_family)
        AND c.value_sha256 IS NOT NULL
        AND x.line_id IS NULL
),
own_replies_with_writes AS (
    SELECT
        r.ts,
        r.conn_no,
        r.segment_no,
        r.value_sha256,
        r.key_owner,
        r.value_owner,
        CASE WHEN p.single_key THEN p.digest_owner ELSE a.digest_owner END AS digest_owner,
        CASE WHEN p.single_key THEN false ELSE coalesce(a.digest_ambiguous, false) END AS digest_ambiguous,
        CASE WHEN p.single_key THEN p.digest_items_line_id ELSE a.digest_items_line_id END AS digest_items_line_id
    FROM own_replies AS r
    LEFT JOIN digest_profiles AS p
        ON r.value_sha256 = p.value_sha256
        AND p.first_write_ts <= r.ts
    LEFT JOIN digest_as_of AS a
        ON r.line_id = a.line_id
),
another_owners_bytes_read_as_own AS (
    SELECT ts, conn_no, segment_no, value_sha256, key_owner
    FROM own_replies_with_writes
    WHERE digest_owner IS NOT NULL
        AND NOT digest_ambiguous
        AND digest_items_line_id IS NULL
        AND (key_owner IS NULL OR key_owner <> digest_owner)
        AND (value_owner IS NULL OR value_owner <> digest_owner)
),
-- one pass per digest (a CTE read twice is materialised whole by DuckDB: 0.6 s at 1M instead of 0.1 s)
per_digest AS (
    SELECT
        value_sha256,
        CASE WHEN count(DISTINCT coalesce(key_owner, '')) >= 3 AND count(DISTINCT conn_no) >= 3 THEN true
            ELSE false END AS read_by_many,
        min(ts) AS first_ts,
        count(*) AS all_reads,
        min(CASE WHEN segment_no > 0 THEN ts END) AS first_ts_after_reset,
        count(CASE WHEN segment_no > 0 THEN 1 END) AS reads_after_reset
    FROM another_owners_bytes_read_as_own
    GROUP BY value_sha256
)
SELECT
    value_sha256,
    CASE WHEN read_by_many THEN first_ts ELSE first_ts_after_reset END AS first_read_ts,
    CASE WHEN read_by_many THEN all_reads ELSE reads_after_reset END AS reads
FROM per_digest
WHERE read_by_many
    OR reads_after_reset > 0;
