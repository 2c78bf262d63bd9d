-- read_digests: every reading call with the digest tier of what it read (docs/design.md "Owner of a served
-- item", tier 2): written_digests, where digest_ambiguous is also true once a read has received the digest as its
-- own key's value under another owner than the writes name (42_digests_read_as_own): from then on the digest
-- names several owners, as if written under both keys. A read before that keeps the writes' owner.
-- Cost: done before the request join (45_read_viewers), so the wide value_sha256 is dropped early.
CREATE OR REPLACE TEMPORARY VIEW read_digests AS
SELECT
    d.line_id,
    d.ts,
    d.request_id,
    d.status,
    d.value_owner,
    d.is_read_op,
    d.key_owner,
    d.key_ownerless_family,
    d.key_multi,
    d.reply_line_id,
    d.reply_key,
    d.reply_is_read_op,
    d.reply_key_owner,
    d.reply_key_category,
    d.reply_key_severity,
    d.reply_key_multi,
    d.reply_request_id,
    d.digest_key,
    d.digest_owner,
    d.digest_category,
    d.digest_severity,
    d.digest_items_line_id,
    CASE
        WHEN d.digest_ambiguous THEN true
        WHEN o.value_sha256 IS NOT NULL THEN true
        ELSE false
    END AS digest_ambiguous
FROM written_digests AS d
LEFT JOIN digests_read_as_own AS o
    ON d.value_sha256 = o.value_sha256
    AND o.first_read_ts <= d.ts
    AND d.digest_owner IS NOT NULL;
