-- notable_reads: every reading call that matters for the outputs, judged: crossed, flagged (conflict or
-- digest-ambiguous), of unknown viewer, or carrying a value whose owner is not its viewer. Each with the
-- owner of the value it received, by evidence tier (docs/design.md "Owner of a served item"), the value's
-- key and category, and what became of it. (Ordinary reads, a viewer's own data, are judged the same way
-- but not kept: counts of served items come from cache_lines.)
--   owner_by_value       the logged value_owner;
--   owner_by_digest      the latest earlier write of the same digest (43_read_digests;
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
-- crossed: the read received another call's reply, or its value names another owner than its key's (a key of
-- a family that names no owner, e.g. a public one, has nobody's values: any owner its value names is another).
-- items_line_id: the multi-key call (docs/design.md "Multi-key calls") whose items the value is: the reply call when
-- the read received a multi-key call's data, else the read itself when it is a multi-key call that got its own
-- reply; set when value_owner and digest name no owner, or name one of the items' owners and no tiers conflict
-- (the logs give one owner for the whole reply: alice named in the reply of her MGET of her titles and carol's does
-- not make carol's titles hers, nor her billing titles). 52_notable_items then judges each item (owner, category,
-- severity, value_key of the item); here the line's figures are the items' common ones (15_cache_lines), and such
-- a read is kept unless every item is the viewer's. A value naming none of the items' owners stays one row.
-- When the digest decides (no ambiguity, no conflict) and the write it matched was a multi-key write
-- (digest_items_line_id; its owner is every item's), the value is that write's items: items_line_id is that
-- line, whatever the read asked for or received (the value served is the digest's, as for its category), and
-- items_by_digest tells 52_notable_items to keep the read's own connection and key tiers.
-- value_outside_items / digest_outside_items: the value (read itself, not crossed by connection) or the reply
-- (crossed) is a multi-key call whose items each have an owner or a family that names nobody (at least one
-- owner), and value_owner / the digest names none of those owners: as for a single key whose owner is not the
-- value's, the read is crossed (its own call) or its tiers conflict (the reply call). With one common owner
-- this is the plain comparison; with several (key_owner NULL) it is the only one.
-- outcome: 'served' (a read op, status ok, data came back, the request answered below 500: a served item
-- that reached its viewer), 'failed' (status error: the client threw the reply away and reset; or the
-- request answered 5xx), 'not-data' (the reading op is no read op, or the reply it got was no data),
-- 'background' (no request); in that order of precedence: 'failed' before 'not-data', as the simulator's
-- ground truth (a SET, or a GET that got an "OK", in a request that answered 5xx failed).
-- Cost: the judging runs over every read, so it carries only the columns the judging needs; the few
-- reads it keeps then fetch their descriptive columns (file, line, key family, host, ...) by line_id.
-- Plan: the reads are joined, in the order written, to the smaller tables on the right of each join (crossed
-- replies, digests, requests, sessions; kept reads last). Left to its estimates, DuckDB hashed the million
-- reads for the request join instead (1.9 CPU-s at 1M, 1.4 as written).
-- materialize
-- duckdb: joins as written
CREATE OR REPLACE TEMPORARY VIEW notable_reads AS
WITH multi_key_owners AS (
    SELECT line_id, item_owner
    FROM cache_line_items
    WHERE item_owner IS NOT NULL
    GROUP BY line_id, item_owner
),
owned_multi_key_lines AS (
    SELECT line_id
    FROM cache_line_items
    GROUP BY line_id
    HAVING count(item_owner) > 0
        AND min(CASE WHEN item_owner IS NULL AND NOT item_ownerless_family THEN 0 ELSE 1 END) = 1
),
value_lines AS (
    SELECT
        read_viewers.*,
        CASE
            WHEN reply_line_id IS NULL AND key_multi THEN line_id
            WHEN reply_line_id IS NOT NULL AND reply_is_read_op AND reply_key_multi THEN reply_line_id
            ELSE CAST(NULL AS BIGINT)
        END AS value_line_id
    FROM read_viewers
),
tiers AS (
    SELECT
        r.*,
        r.value_owner AS owner_by_value,
        CASE WHEN r.digest_ambiguous THEN CAST(NULL AS STRING) ELSE r.digest_owner END AS owner_by_digest,
        CASE WHEN r.reply_is_read_op THEN r.reply_key_owner ELSE CAST(NULL AS STRING) END AS owner_by_connection,
        r.key_owner AS owner_by_key,
        CASE WHEN r.reply_line_id IS NOT NULL THEN true ELSE false END AS crossed_by_connection,
        CASE WHEN r.reply_line_id IS NOT NULL AND NOT r.reply_is_read_op THEN true ELSE false END AS reply_not_data,
        CASE
            WHEN o.line_id IS NOT NULL AND r.value_owner IS NOT NULL AND v.line_id IS NULL THEN true ELSE false
        END AS value_outside_items,
        CASE WHEN v.line_id IS NOT NULL THEN true ELSE false END AS value_in_items,
        CASE WHEN d.line_id IS NOT NULL AND NOT r.digest_ambiguous THEN true ELSE false END AS digest_in_items,
        CASE
            WHEN o.line_id IS NOT NULL AND NOT r.digest_ambiguous AND r.digest_owner IS NOT NULL
                AND d.line_id IS NULL THEN true
            ELSE false
        END AS digest_outside_items
    FROM value_lines AS r
    LEFT JOIN owned_multi_key_lines AS o
        ON r.value_line_id = o.line_id
    LEFT JOIN multi_key_owners AS v
        ON r.value_line_id = v.line_id
        AND r.value_owner = v.item_owner
    LEFT JOIN multi_key_owners AS d
        ON r.value_line_id = d.line_id
        AND r.digest_owner = d.item_owner
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
            -- the reply of a multi-key call of several owners: the value names none of them
            WHEN crossed_by_connection AND (value_outside_items OR digest_outside_items) THEN true
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
            -- a key of a family whose values are nobody's (a public key) carrying someone's value
            WHEN key_ownerless_family AND (owner_by_value IS NOT NULL OR owner_by_digest IS NOT NULL) THEN true
            -- a multi-key call of several owners whose value names none of them
            WHEN value_outside_items OR digest_outside_items THEN true
            ELSE false
        END AS crossed,
        -- whose value was served: the digest's key, else the reply call's key, else the key asked for
        CASE
            WHEN owner_by_digest IS NOT NULL THEN 'digest'
            WHEN crossed_by_connection AND reply_is_read_op THEN 'reply'
            ELSE 'asked'
        END AS value_source,
        -- the owner every item of value_line_id has, when they have one (the read's or the reply call's key_owner;
        -- the digest's for the items of a multi-key write)
        CASE
            WHEN owner_by_digest IS NOT NULL AND digest_items_line_id IS NOT NULL THEN owner_by_digest
            WHEN crossed_by_connection THEN reply_key_owner
            ELSE key_owner
        END AS items_owner
    FROM tiers
),
itemised_reads AS (
    SELECT
        judged_reads.*,
        CASE
            WHEN tiers_conflict THEN CAST(NULL AS BIGINT)
            WHEN owner_by_digest IS NOT NULL AND digest_items_line_id IS NOT NULL THEN digest_items_line_id
            WHEN value_line_id IS NULL THEN CAST(NULL AS BIGINT)
            WHEN owner_by_value IS NOT NULL AND NOT value_in_items THEN CAST(NULL AS BIGINT)
            WHEN owner_by_digest IS NOT NULL AND NOT digest_in_items THEN CAST(NULL AS BIGINT)
            ELSE value_line_id
        END AS items_line_id,
        CASE
            WHEN NOT tiers_conflict AND owner_by_digest IS NOT NULL AND digest_items_line_id IS NOT NULL THEN true
            ELSE false
        END AS items_by_digest
    FROM judged_reads
),
kept_reads AS (
    SELECT *
    FROM itemised_reads
    WHERE crossed
        OR tiers_conflict
        OR digest_ambiguous
        OR viewer_kind = 'unknown'
        OR (owner_id IS NOT NULL AND (viewer_id IS NULL OR viewer_id <> owner_id))
        OR (items_line_id IS NOT NULL AND (owner_id IS NULL OR items_owner IS NULL OR viewer_id IS NULL
            OR viewer_id <> items_owner))
)
SELECT
    j.line_id,
    l.file_no,
    l.source_line,
    j.ts,
    j.request_id,
    j.session_id,
    j.request_user_id,
    j.viewer_id,
    j.viewer_kind,
    j.owner_id,
    l.key,
    CASE j.value_source
        WHEN 'digest' THEN j.digest_category
        WHEN 'reply' THEN j.reply_key_category
        ELSE l.key_category
    END AS category,
    CASE j.value_source
        WHEN 'digest' THEN j.digest_severity
        WHEN 'reply' THEN j.reply_key_severity
        ELSE l.key_severity
    END AS severity,
    CASE
        WHEN j.tiers_conflict THEN 'conflict'
        WHEN j.owner_by_value IS NOT NULL THEN 'value_owner'
        WHEN j.digest_ambiguous THEN 'digest-ambiguous'
        WHEN j.owner_by_digest IS NOT NULL THEN 'digest'
        WHEN j.owner_by_connection IS NOT NULL THEN 'connection'
        WHEN j.crossed_by_connection THEN 'connection'
        WHEN j.owner_by_key IS NOT NULL THEN 'key'
        ELSE CAST(NULL AS STRING)
    END AS evidence,
    CASE j.value_source
        WHEN 'digest' THEN j.digest_key
        WHEN 'reply' THEN j.reply_key
        ELSE l.key
    END AS value_key,
    l.host,
    l.conn_id,
    j.route,
    j.request_status,
    CASE WHEN j.crossed_by_connection THEN j.reply_request_id ELSE CAST(NULL AS STRING) END AS reply_request_id,
    j.owner_by_value,
    j.owner_by_digest,
    j.owner_by_connection,
    j.owner_by_key,
    j.crossed,
    j.crossed_by_connection,
    j.reply_not_data,
    j.reply_key_category,
    j.reply_key_owner,
    j.items_line_id,
    j.items_by_digest,
    CASE
        WHEN j.status = 'error' THEN 'failed'
        WHEN j.request_failed THEN 'failed'
        WHEN NOT j.is_read_op THEN 'not-data'
        WHEN j.status <> 'ok' THEN 'failed'
        WHEN j.reply_not_data AND j.owner_by_value IS NULL AND j.owner_by_digest IS NULL THEN 'not-data'
        WHEN j.request_id IS NULL THEN 'background'
        ELSE 'served'
    END AS outcome,
    CASE WHEN j.is_read_op AND j.status = 'ok' THEN true ELSE false END AS is_served_item
FROM cache_lines AS l
INNER JOIN kept_reads AS j
    ON l.line_id = j.line_id;
