-- CSV -> one text per canonical field: the cell of the field's column (csv_cells.sql).
-- {{fields}}: `v[i] AS f_<name>` for every field (or a constant).
SELECT file_id,
       line_no,
       coalesce(text, bin_text) AS raw,
       csv_reason AS pre_reason,
       {{fields}}
FROM (SELECT *, cells AS v FROM ({{cells}}))
