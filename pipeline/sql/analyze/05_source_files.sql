-- source_files: a number for every cache log file, in the order the files were written: by the first ts each
-- holds, then by name. A cache line's identity is then numeric: line_id = file_no * 2^32 + source_line, ordered
-- like (file, line); later views sort and join on it instead of on the file name. It breaks ties of ts within a
-- connection, so the order matters where one connection's lines share a ts across two files: logrotate names the
-- older file cache.jsonl.1 and the current one cache.jsonl, which sort the other way by name.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW source_files AS
WITH cache_files AS (
    SELECT
        source_file,
        min(ts) AS first_ts
    FROM cache_lake
    GROUP BY source_file
)
SELECT
    source_file,
    row_number() OVER (ORDER BY first_ts NULLS LAST, source_file NULLS LAST) AS file_no
FROM cache_files;
