-- CSV whose one column holds the record as JSON text (a source's `payload` naming a column: the `_raw` of Splunk's
-- CSV export) -> one text per canonical field: the line's cells (csv_cells.sql), and the fields read from that
-- column's text as json_fields.sql reads a line (every text through try()). A line without text there is
-- missing_payload; a text that is not JSON, invalid_json; JSON that is no object, not_an_object.
-- {{column}}: the payload column's position in the header (NULL: the header has none); {{fields}}: `v[i] AS
-- f_<name>` for every field (or a constant); {{paths}}: their JSON pointers.
SELECT file_id,
       line_no,
       coalesce(text, bin_text) AS raw,
       CASE WHEN csv_reason IS NOT NULL THEN csv_reason
            WHEN document IS NULL THEN 'missing_payload'
            WHEN v IS NULL THEN 'invalid_json'
            WHEN NOT starts_with(ltrim(document, ' ' || chr(9)), '{') THEN 'not_an_object'
       END AS pre_reason,
       {{fields}}
FROM (
    SELECT *, try(json_extract_string(document, {{paths}})) AS v
    FROM (
        SELECT *,
               CASE WHEN csv_reason IS NULL THEN nullif(trim(cells[{{column}}], ' ' || chr(9)), '') END AS document
        FROM ({{cells}})
    )
)
