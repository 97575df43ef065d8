-- Lookup, second pass: the candidate rows read whole, only inside the row-id ranges that hold them
-- ({row_ranges}: `rowid BETWEEN a AND b OR ...`, which DuckDB prunes by row group); picked by row id
-- first (materialized, so the full keys of other rows are never compared), then the full key is
-- compared and each key's best final row wins: the best status (ok > refused > parse_error), then the
-- latest appended row of that status. A later row of a worse status (a racing process whose call was
-- moderated, an old parser's parse_error) never replaces an answer.
WITH candidates AS MATERIALIZED (
    SELECT l.rowid AS row_id, l.key, l.output, l.status, l.error
    FROM llm_ledger AS l
    SEMI JOIN candidate_rows AS c ON l.rowid = c.row_id
    WHERE {row_ranges}
)
SELECT c.key, c.output, c.status, c.error
FROM candidates AS c
JOIN requested_keys AS r USING (key)
QUALIFY row_number() OVER (
    PARTITION BY c.key
    ORDER BY CASE c.status WHEN 'ok' THEN 3 WHEN 'refused' THEN 2 WHEN 'parse_error' THEN 1 END DESC, c.row_id DESC
) = 1;
