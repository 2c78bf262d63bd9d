-- JSON Lines -> one text per canonical field. One parse per line: json_extract_string with the list of JSON
-- pointers of every mapped field gives the field texts (NULL where a path is missing or JSON null). A line that is
-- not JSON makes that function fail, so a line the stream marks `suspect` (it does not start with '{' and end
-- with '}') goes through try(), which gives NULL instead. A malformed line that looks like an object still fails
-- the statement; ingest then runs it again with {{careful}} = true (every line through try()). try() is not used
-- for every line because it costs a third of the parse. Never DuckDB's ignore_errors: it turns a bad line into
-- NULL fields.
-- {{fields}}: `v[i] AS f_<name>` for every field (or a constant), from the config's field map.
SELECT file_id,
       line_no,
       coalesce(text, bin_text) AS raw,
       CASE WHEN text IS NULL THEN 'invalid_utf8'
            WHEN v IS NULL THEN
                CASE WHEN contains(text, chr(0)) THEN 'nul_byte'
                     WHEN trim(text, ' ' || chr(9) || chr(10) || chr(13)) = '' THEN 'blank_line'
                     ELSE 'invalid_json'
                END
            WHEN suspect AND NOT starts_with(ltrim(text, ' ' || chr(9)), '{') THEN 'not_an_object'
       END AS pre_reason,
       {{fields}}
FROM (
    SELECT *,
           CASE WHEN {{careful}} THEN try(json_extract_string(text, {{paths}}))
                ELSE json_extract_string(text, {{paths}})
           END AS v
    FROM ({{lines}})
)
