-- reading_calls: every call that read a reply (any status but cancelled/timeout; reset ops excluded), with
-- the call whose reply it received when that was another call (30_crossed_replies): reply_line_id,
-- reply_key, reply_is_read_op, reply_key_owner/category/severity, reply_key_multi (the reply call was a
-- multi-key call, 12_cache_line_items), reply_request_id; key_multi: the read itself is one. Only the columns
-- the judging needs: 50_notable_reads fetches the descriptive ones (file, line, key, host, ...) by line_id.
CREATE OR REPLACE TEMPORARY VIEW reading_calls AS
SELECT
    c.line_id,
    c.ts,
    c.request_id,
    c.status,
    c.value_sha256,
    c.value_owner,
    c.is_read_op,
    c.key_owner,
    c.key_ownerless_family,
    c.key_multi,
    r.reply_line_id,
    r.reply_key,
    r.reply_is_read_op,
    r.reply_key_owner,
    r.reply_key_category,
    r.reply_key_severity,
    r.reply_key_multi,
    r.reply_request_id
FROM cache_lines AS c
LEFT JOIN crossed_replies AS r
    ON c.line_id = r.line_id
WHERE NOT c.is_reset_op
    AND c.status NOT IN ('cancelled', 'timeout');
