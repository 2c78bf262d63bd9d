-- CSV lines -> their cells, by the position of each column in the file's header line (which is not streamed).
-- A line without quotes is split on commas; a line with quotes goes through whosaw_csv_quoted. `csv_reason`: why a
-- line is no record: a line with more or fewer fields than the header is rejected (csv_columns), never padded or
-- cut; records are physical lines, so a quoted field holding a line break leaves both lines with an unterminated
-- quote (csv_quote). {{ncols}}: the header's column count.
SELECT *,
       CASE WHEN text IS NULL THEN 'invalid_utf8'
            WHEN contains(text, chr(0)) THEN 'nul_byte'
            WHEN trim(body, ' ' || chr(9) || chr(13)) = '' THEN 'blank_line'
            WHEN cells IS NULL THEN 'csv_quote'
            WHEN len(cells) <> {{ncols}} THEN 'csv_columns'
       END AS csv_reason
FROM (
    SELECT *,
           CASE WHEN NOT contains(body, '"') THEN string_split(body, ',') ELSE whosaw_csv_quoted(body) END AS cells
    FROM (SELECT *, whosaw_chomp(text) AS body FROM ({{lines}}))
)
