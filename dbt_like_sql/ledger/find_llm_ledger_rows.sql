-- Lookup, first pass: the row ids of final rows (ok, refused, parse_error) whose key_hash is requested,
-- reading only the narrow columns (key_hash, status) of every row. Any other status (error, or one this
-- madef does not know) is not final: its call is sent again.
SELECT l.rowid AS row_id
FROM llm_ledger AS l
JOIN requested_keys AS r USING (key_hash)
WHERE l.status IN ('ok', 'refused', 'parse_error')
ORDER BY row_id;
