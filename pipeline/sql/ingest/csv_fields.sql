-- CSV -> one text per canonical field, by the position of its column in the file's header line (which is not
-- streamed). A line without quotes is split on commas; a line with quotes goes through whosaw_csv_quoted.
-- A line with more or fewer fields than the header is rejected (csv_columns), never padded or cut. Records are
-- physical lines: a quoted field holding a line break leaves both lines with an unterminated quote (csv_quote).
-- {{fields}}: `v[i] AS f_<name>` for every field (or a constant); {{ncols}}: the header's column count.
SELECT file_id,
       line_no,
       coalesce(text, bin_text) AS raw,
       CASE WHEN text IS NULL THEN 'invalid_utf8'
            WHEN contains(text, chr(0)) THEN 'nul_byte'
            WHEN trim(body, ' ' || chr(9) || chr(13)) = '' THEN 'blank_line'
            WHEN v IS NULL THEN 'csv_quote'
            WHEN len(v) <> {{ncols}} THEN 'csv_columns'
       END AS pre_reason,
       {{fields}}
FROM (
    SELECT *,
           CASE WHEN NOT contains(body, '"') THEN string_split(body, ',') ELSE whosaw_csv_quoted(body) END AS v
    FROM (SELECT *, whosaw_chomp(text) AS body FROM ({{lines}}))
)
