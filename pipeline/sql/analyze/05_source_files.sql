-- source_files: a number for every cache log file (in file name order). A cache line's identity is then
-- numeric: line_id = file_no * 2^32 + source_line, ordered like (source_file, source_line); later views sort
-- and join on it instead of on the file name.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW source_files AS
WITH distinct_cache_files AS (
    SELECT DISTINCT source_file FROM cache_lake
)
SELECT
    source_file,
    row_number() OVER (ORDER BY source_file NULLS LAST) AS file_no
FROM distinct_cache_files;
