-- Lookup, first pass: the row ids of final rows whose key_hash is requested, reading only the narrow
-- columns (key_hash, status) of every row; error rows are not final and are sent again.
SELECT l.rowid AS row_id
FROM llm_ledger AS l
JOIN requested_keys AS r USING (key_hash)
WHERE l.status <> 'error'
ORDER BY row_id;
