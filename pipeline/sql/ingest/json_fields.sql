-- JSON Lines -> one text per canonical field. One parse per line: json_extract_string with the list of JSON
-- pointers of every mapped field gives the field texts (NULL where a path is missing or JSON null). A line that is
-- not JSON makes that function fail, so a line the stream marks `suspect` (it does not start with '{' and end
-- with '}') goes through try(), which gives NULL instead. A malformed line that looks like an object still fails
-- the statement; ingest then runs it again with {{careful}} = true (every line through try()). try() is not used
-- for every line because it costs a third of the parse. Never DuckDB's ignore_errors: it turns a bad line into
-- NULL fields.
-- {{document}}: the JSON the fields are read from: the line, or its payload (a source's `payload`: the text of a
-- field, Docker's "log", a Splunk export's "result._raw"; or a pattern's group, the JSON after a time and stream on
-- a Kubernetes node), and then {{payload}} = true and every line is parsed carefully. A line without a payload is
-- missing_payload ({{envelope_broken}}: invalid_json, the line itself not being JSON where the payload is a
-- field's); the payload's own text is judged as a line is.
-- {{fields}}: `v[i] AS f_<name>` for every field (or a constant), from the config's field map.
SELECT file_id,
       line_no,
       coalesce(text, bin_text) AS raw,
       CASE WHEN text IS NULL THEN 'invalid_utf8'
            WHEN {{payload}} AND document IS NULL THEN
                CASE WHEN contains(text, chr(0)) THEN 'nul_byte'
                     WHEN trim(text, ' ' || chr(9) || chr(10) || chr(13)) = '' THEN 'blank_line'
                     WHEN {{envelope_broken}} THEN 'invalid_json'
                     ELSE 'missing_payload'
                END
            WHEN v IS NULL THEN
                CASE WHEN contains(document, chr(0)) THEN 'nul_byte'
                     WHEN trim(document, ' ' || chr(9) || chr(10) || chr(13)) = '' THEN 'blank_line'
                     ELSE 'invalid_json'
                END
            WHEN ({{payload}} OR suspect) AND NOT starts_with(ltrim(document, ' ' || chr(9)), '{') THEN 'not_an_object'
       END AS pre_reason,
       {{fields}}
FROM (
    SELECT *,
           CASE WHEN {{careful}} THEN try(json_extract_string(document, {{paths}}))
                ELSE json_extract_string(document, {{paths}})
           END AS v
    FROM (SELECT *, {{document}} AS document FROM ({{lines}}))
)
