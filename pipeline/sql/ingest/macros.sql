-- Helpers for ingestion, created once per connection. Everything here is plain DuckDB SQL.

-- A number read as an epoch, in microseconds: seconds, ms, us or ns told apart by magnitude
-- (s < 1e11 <= ms < 1e14 <= us < 1e17 <= ns). NULL outside 1970..2286 (later checks say 1990..2100).
-- ns are truncated to us (the lake keeps microseconds).
CREATE OR REPLACE TEMP MACRO whosaw_epoch_us(n) AS (
    CASE WHEN n < 0 THEN NULL
         WHEN n < 1e11 THEN floor(n * 1000000)
         WHEN n < 1e14 THEN floor(n * 1000)
         WHEN n < 1e17 THEN floor(n)
         WHEN n < 1e19 THEN floor(n / 1000)
    END
);

-- A zone name that names one zone: an IANA name (Europe/London, Etc/GMT-2) or UTC, GMT, UCT, Zulu (GMT+2 too).
-- DuckDB reads an abbreviation (its ISO cast after the time, strptime's %Z) as the ICU zone of that id, which is
-- often not what a log means by it: BST (British Summer Time) as Bangladesh, CST (China) as US Central, IST
-- (Ireland, Israel) as India, CET in summer as CEST. A time with one is bad_ts, never a time hours off.
CREATE OR REPLACE TEMP MACRO whosaw_zone_named(t) AS (
    regexp_matches(t, '(^|[^A-Za-z0-9_/])((?i:UTC|GMT|UCT|Zulu)|[A-Za-z_]+/[A-Za-z_][A-Za-z0-9_+/-]*)([^A-Za-z0-9_/]|$)')
);

-- A text ending in a UTC offset after a time (01:00:00+05:30, 01:00 -0800, 01:00:00.5+05) whose hours are not
-- 00..23 or whose minutes (or seconds) are not 00..59: no zone has it (RFC 3339 allows 23:59 at most), yet DuckDB's
-- cast and strptime's %z read +99:00 as 99 hours, a time days off. Such a time is bad_ts, never read.
-- (Most times end in Z: those are passed over without a regex.)
CREATE OR REPLACE TEMP MACRO whosaw_offset_bad(t) AS (
    NOT suffix(t, 'Z') AND regexp_matches(t, ':[0-9]{2}(\.[0-9]*)?\s*[+-]((2[4-9]|[3-9][0-9])(:?[0-9]{2}){0,2}'
                                             || '|[0-9]{2}(:?[0-9]{2})?:?[6-9][0-9]|[0-9]{2}:?[6-9][0-9]:?[0-9]{2})\s*$')
);

-- A timestamp text -> TIMESTAMPTZ, NULL when it is not a time. Text without '-' or ':' is an epoch number;
-- anything else is ISO-8601: an offset or Z is honoured, a zone-less time is read in the session TimeZone,
-- which ingest sets to the source's zone for the statement (UTC unless the config names one). RFC 3339 also
-- allows a lower-case 't' and 'z', which DuckDB does not read: a text it cannot read is tried once more in upper
-- case (only those: COALESCE evaluates its second argument only where the first is NULL). A leap second
-- (23:59:60, also in RFC 3339), which DuckDB does not read either, is the first instant of the next second, as
-- PostgreSQL reads it: 23:59:60.5Z is 00:00:00.5Z. DuckDB's cast also reads a zone name after the time: only one
-- that names one zone (whosaw_zone_named, tried only on a text ending in a letter but Z, which ISO never does;
-- the end check costs about 0.1 CPU-s per million lines).
CREATE OR REPLACE TEMP MACRO whosaw_ts(t) AS (
    CASE WHEN NOT contains(t, '-') AND NOT contains(t, ':')
         THEN timezone('UTC', make_timestamp(
                  CAST(whosaw_epoch_us(TRY_CAST(trim(t) AS DECIMAL(38, 9))) AS BIGINT)))
         WHEN regexp_matches(t, '[A-Ya-y]\s*$') AND NOT whosaw_zone_named(t) THEN NULL
         WHEN whosaw_offset_bad(t) THEN NULL
         ELSE coalesce(TRY_CAST(t AS TIMESTAMPTZ), TRY_CAST(upper(t) AS TIMESTAMPTZ),
                       TRY_CAST(regexp_replace(upper(t), '([0-9][0-9]:[0-9][0-9]):60', '\1:59') AS TIMESTAMPTZ)
                           + INTERVAL 1 SECOND)
    END
);

-- An id written as a whole number with fractional zeros ('42.0', '42.00') is the id '42': pandas keeps an integer
-- column with a gap (the anonymous requests' user_id) as float64, and its JSON and CSV exports write user 42 as 42.0,
-- another user than the 42 of key user:42:titles, so every user reading their own data became an exposure.
-- {{id_text}}: schema.py's id_text(t), the rule the side tables and the users directory read their ids with too.
CREATE OR REPLACE TEMP MACRO whosaw_id(t) AS (
    {{id_text}}
);

-- A field text that is a JSON object or array, not a value: a field map naming the parent ("user" for
-- {"user": {"id": ...}}) would otherwise make '{"id": ...}' a user id. (A key may be an array: a multi-key call.)
CREATE OR REPLACE TEMP MACRO whosaw_structured(t) AS (
    (starts_with(t, '{') OR starts_with(t, '[')) AND json_valid(t)
);

-- The plausible range of a log time: anything outside is an impossible ts, not a record.
CREATE OR REPLACE TEMP MACRO whosaw_ts_ok(ts) AS (
    ts >= TIMESTAMPTZ '1990-01-01 00:00:00+00' AND ts < TIMESTAMPTZ '2101-01-01 00:00:00+00'
);

-- A status read as a number (from '200', '200.0', '2e2') is an HTTP status: a whole number in 0..999.
-- A fraction is not rounded into a status: the caller rejects the line.
CREATE OR REPLACE TEMP MACRO whosaw_status_ok(n) AS (
    n BETWEEN 0 AND 999 AND n = floor(n)
);

-- A text line without its line end (LF, or CR LF).
CREATE OR REPLACE TEMP MACRO whosaw_chomp(t) AS (
    CASE WHEN suffix(t, chr(13) || chr(10)) THEN t[:-3]
         WHEN suffix(t, chr(10)) THEN t[:-2]
         ELSE t
    END
);

-- The fields of one CSV line that holds double quotes (RFC 4180, on one physical line): NULL when the quoting
-- is broken (a stray or unterminated quote), so the caller rejects the line instead of guessing.
-- Every field is matched together with the comma before it, so empty fields are never skipped.
CREATE OR REPLACE TEMP MACRO whosaw_csv_quoted(body) AS (
    CASE WHEN array_to_string(regexp_extract_all(',' || body, ',("(?:[^"]|"")*"|[^,"]*)', 1), ',') = body
         THEN list_transform(
                  regexp_extract_all(',' || body, ',("(?:[^"]|"")*"|[^,"]*)', 1),
                  lambda x: CASE WHEN starts_with(x, '"') THEN replace(x[2:-2], '""', '"') ELSE x END)
    END
);
