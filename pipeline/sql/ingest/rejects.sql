-- rejects/<kind>: every line that is not a readable record of its kind. Where it was (source_file; source_line:
-- the 1-based physical line of the decompressed file, or the Parquet row), why (reason: a short code; detail:
-- what the code means) and the line as read (raw: cut to 500 characters, NUL bytes and undecodable bytes shown as
-- \xNN). raw may hold personal data: it is written under --out only, never printed.
SELECT source_file, source_line, reason, {{detail}} AS detail, raw
FROM ({{rows}})
ORDER BY source_file, source_line
