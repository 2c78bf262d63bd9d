-- connections: a number (conn_no) for every pooled connection seen in the cache log. A connection is
-- host and conn_id together (conn_id is unique only within a host); lines without either have none.
-- materialize
CREATE OR REPLACE TEMPORARY VIEW connections AS
WITH distinct_connections AS (
    SELECT DISTINCT host, conn_id
    FROM cache_lake
    WHERE host IS NOT NULL AND conn_id IS NOT NULL
)
SELECT
    host,
    conn_id,
    row_number() OVER (ORDER BY host, conn_id) AS conn_no
FROM distinct_connections;
