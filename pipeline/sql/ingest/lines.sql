-- The physical lines of the text inputs, as ingest.py streams them (Arrow): `file_id`, `line_no` (1-based line of
-- the decompressed file) and the line with its line end in `line`; a chunk that is not valid UTF-8 comes as bytes
-- in `line_bin` instead, and a line there that does not decode keeps `text` NULL (rejected as invalid_utf8).
-- `suspect`: the line does not start with '{' and end with '}' (JSON Lines only; see json_fields.sql).
SELECT file_id,
       line_no,
       coalesce(line, try(decode(line_bin))) AS text,
       CASE WHEN line IS NULL THEN regexp_replace(CAST(line_bin AS VARCHAR), '(\\x0D)?\\x0A$', '') END AS bin_text,
       suspect OR line IS NULL AS suspect
FROM {{source}}
