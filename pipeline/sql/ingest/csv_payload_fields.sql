-- CSV whose one column holds the record as JSON text (a source's `payload` naming a column: the `_raw` of Splunk's
-- CSV export) -> one text per canonical field: the line is split as csv_fields.sql splits it, and the fields are
-- read from that column's text as json_fields.sql reads a line (every text through try()). A line without text
-- there is missing_payload; a text that is not JSON, invalid_json; JSON that is no object, not_an_object.
-- {{column}}: the payload column's position in the header (NULL: the header has none); {{ncols}}: the header's
-- column count; {{fields}}: `v[i] AS f_<name>` for every field (or a constant); {{paths}}: their JSON pointers.
SELECT file_id,
       line_no,
       coalesce(text, bin_text) AS raw,
       CASE WHEN text IS NULL THEN 'invalid_utf8'
            WHEN contains(text, chr(0)) THEN 'nul_byte'
            WHEN trim(body, ' ' || chr(9) || chr(13)) = '' THEN 'blank_line'
            WHEN cells IS NULL THEN 'csv_quote'
            WHEN len(cells) <> {{ncols}} THEN 'csv_columns'
            WHEN document IS NULL THEN 'missing_payload'
            WHEN v IS NULL THEN 'invalid_json'
            WHEN NOT starts_with(ltrim(document, ' ' || chr(9)), '{') THEN 'not_an_object'
       END AS pre_reason,
       {{fields}}
FROM (
    SELECT *, try(json_extract_string(document, {{paths}})) AS v
    FROM (
        SELECT *,
               CASE WHEN len(cells) = {{ncols}} THEN nullif(trim(cells[{{column}}], ' ' || chr(9)), '') END AS document
        FROM (
            SELECT *,
                   CASE WHEN NOT contains(body, '"') THEN string_split(body, ',') ELSE whosaw_csv_quoted(body) END
                       AS cells
            FROM (SELECT *, whosaw_chomp(text) AS body FROM ({{lines}}))
        )
    )
)
