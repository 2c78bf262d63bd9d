-- digest_as_of: for every reading call of a read op (a write's value_sha256 is what it stored, not what it
-- got back) whose digest was written under several keys or owners
-- (38_digest_profiles: single_key false), the latest write of that digest at or before the read: its key
-- gives owner and category; digest_ambiguous: by then, the digest had been written under more than one
-- owner (35_digest_writes: running min <> max); digest_items_line_id: that write's line when it was a
-- multi-key write.
-- A portable "as of" lookup: the digest's writes and reads in one stream ordered by (ts, writes first); the
-- running max of write_no is the latest write so far; an equi-join fetches it. No range join, so a digest
-- written or read very often costs a sort, not a product. Small (reads of the rare digests of several keys) and
-- read twice (42_digests_read_as_own, 43_read_digests), so it is materialised.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW digest_as_of AS
WITH multi_key_digests AS (
    SELECT value_sha256
    FROM digest_profiles
    WHERE NOT single_key
),
multi_key_events AS (
    SELECT w.value_sha256, w.ts, 0 AS side, w.write_no, CAST(NULL AS BIGINT) AS read_line_id
    FROM digest_writes AS w
    INNER JOIN multi_key_digests AS m
        ON w.value_sha256 = m.value_sha256
    UNION ALL
    SELECT c.value_sha256, c.ts, 1 AS side, CAST(NULL AS BIGINT) AS write_no, c.line_id AS read_line_id
    FROM cache_lines AS c
    INNER JOIN multi_key_digests AS m
        ON c.value_sha256 = m.value_sha256
    WHERE c.is_read_op
        AND c.status NOT IN ('cancelled', 'timeout')
),
latest_write_per_read AS (
    SELECT
        value_sha256,
        side,
        read_line_id,
        max(write_no) OVER (
            PARTITION BY value_sha256 ORDER BY ts NULLS LAST, side, write_no
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS latest_write_no
    FROM multi_key_events
)
SELECT
    l.read_line_id AS line_id,
    w.digest_key,
    w.digest_owner,
    w.digest_category,
    w.digest_severity,
    w.digest_items_line_id,
    CASE WHEN w.min_owner_so_far <> w.max_owner_so_far THEN true ELSE false END AS digest_ambiguous
FROM latest_write_per_read AS l
INNER JOIN digest_writes AS w
    ON l.value_sha256 = w.value_sha256
    AND l.latest_write_no = w.write_no
WHERE l.side = 1;
