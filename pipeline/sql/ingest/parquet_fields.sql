-- Parquet -> one text per canonical field. source_line is the 1-based row number. Typed columns become text
-- (timestamps as ISO-8601, with their offset when the column has a zone) so one set of rules reads them all.
-- {{fields}}: `<expr> AS f_<name>` per field; {{row}}: the row as a struct (turned into JSON for a rejected row).
-- {{row_number}}: the 0-based row, DuckDB's `file_row_number` (with {{file_row_number}} = true), or, for a file
-- with a column of that name (which the option refuses), row_number() OVER () - 1 in insertion order.
SELECT 0 AS file_id,
       {{row_number}} + 1 AS line_no,
       {{row}} AS raw,
       CAST(NULL AS VARCHAR) AS pre_reason,
       {{fields}}
FROM read_parquet({{path}}, file_row_number = {{file_row_number}}, hive_partitioning = false) AS p
