-- What one COPY writes, hive-partitioned by `pkey`: a record goes to pkey = its UTC hour (epoch hours; ingest.py
-- renames the folder to date=YYYY-MM-DD/hour=H) with the lake columns, source_file, source_line and record_key.
-- A rejected line goes to pkey = -1 and carries its reason and raw text (cut to {{raw_chars}} characters) in the
-- first two text columns ({{c1}}, {{c2}}): that partition is private to ingest, which rewrites it as rejects/.
-- A record whose wall time its zone repeats when the clocks go back (ts_repeated, local_time.sql) goes to pkey = -2:
-- ingest places it in its hour once the whole file is read (repeated_hour.sql).
SELECT {{columns}},
       {{source_files}}[file_id + 1] AS source_file,
       line_no AS source_line,
       record_key,
       CASE WHEN reason IS NOT NULL THEN -1 WHEN ts_repeated THEN -2 ELSE epoch_us(ts) // 3600000000 END AS pkey
FROM ({{records}})
