-- ownership_intervals: who owns a resource, as disjoint [valid_from, valid_to) intervals per resource.
-- Input rows may overlap or leave ends open; a later valid_from ends the interval before it, so at most one
-- owner holds a resource at any instant (for equal valid_from, the smallest owner_id: deterministic).
-- NULL valid_from = since forever, so it sorts first (NULLS FIRST, written out: DuckDB's default puts NULLs last and
-- Spark's first; left open, a since-forever row would overlap every later one and multiply the lines it matches).
-- NULL valid_to = until further notice.
CREATE OR REPLACE TEMPORARY VIEW ownership_intervals AS
WITH ranked_ownership AS (
    SELECT
        resource_id,
        owner_id,
        valid_from,
        valid_to,
        row_number() OVER (
            PARTITION BY resource_id, valid_from ORDER BY owner_id
        ) AS same_start_rank
    FROM ownership_table
    WHERE resource_id IS NOT NULL AND owner_id IS NOT NULL
),
ordered_ownership AS (
    SELECT
        resource_id,
        owner_id,
        valid_from,
        valid_to,
        lead(valid_from) OVER (PARTITION BY resource_id ORDER BY valid_from NULLS FIRST) AS next_valid_from
    FROM ranked_ownership
    WHERE same_start_rank = 1
)
SELECT
    resource_id,
    owner_id,
    valid_from,
    CASE
        WHEN next_valid_from IS NULL THEN valid_to
        WHEN valid_to IS NULL OR next_valid_from < valid_to THEN next_valid_from
        ELSE valid_to
    END AS valid_to
FROM ordered_ownership;
