-- Lookup, second pass: the candidate rows read whole, only inside the row-id ranges that hold them
-- ({row_ranges}: `rowid BETWEEN a AND b OR ...`, which DuckDB prunes by row group); picked by row id
-- first (materialized, so the full keys of other rows are never compared), then the full key is
-- compared and the latest final row per key wins.
WITH candidates AS MATERIALIZED (
    SELECT l.rowid AS row_id, l.key, l.output, l.status, l.error, l.created_at
    FROM llm_ledger AS l
    SEMI JOIN candidate_rows AS c ON l.rowid = c.row_id
    WHERE {row_ranges}
)
SELECT c.key, c.output, c.status, c.error
FROM candidates AS c
JOIN requested_keys AS r USING (key)
QUALIFY row_number() OVER (PARTITION BY c.key ORDER BY c.created_at DESC, c.row_id DESC) = 1;
