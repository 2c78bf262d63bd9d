-- sources.<kind>.values: a logged word of the kind's enumerated field (cache status, sessions event) read as the
-- SPEC word the config maps it to, and the spellings read without a map (ingest.py:_BUILT_IN_WORDS, 'canceled'). The map is matched against the text in lower case, as the field is read
-- without a map (JSON strings as written, CSV fields trimmed); a word it does not name is read as without it, so
-- SPEC's words still work and another word is still bad_status / bad_event. Created for a source with a map
-- before its statements; {{word}} in <kind>.sql names it only then (else lower).
-- {{words}}: `WHEN '<logged word, lower case>' THEN '<SPEC word>'` per word of the map (ingest.py:_words).
CREATE OR REPLACE TEMP MACRO whosaw_word(t) AS (
    CASE lower(t)
        {{words}}
        ELSE lower(t)
    END
);
