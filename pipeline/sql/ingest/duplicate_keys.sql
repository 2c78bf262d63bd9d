-- Re-shipped duplicates, step 1: candidate keys. record_key is a hash of a record's identity (request_id for
-- requests, the whole normalised record for cache and sessions). A key is a candidate when it occurs twice among
-- this run's staged records ({{new}}) or also belongs to a row already in the lake ({{old}}); the lake's keys are
-- recomputed from its columns ({{key_expr}}), never read from a stored hash.
CREATE OR REPLACE TEMP TABLE dup_keys AS
SELECT record_key FROM {{new}} GROUP BY record_key HAVING count(*) > 1
UNION
SELECT record_key FROM {{new}} WHERE record_key IN (SELECT {{key_expr}} FROM {{old}})
