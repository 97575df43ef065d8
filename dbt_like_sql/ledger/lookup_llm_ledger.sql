-- Finished calls for the requested keys; error rows are not final and are sent again.
SELECT l.key, l.output, l.status, l.error
FROM llm_ledger AS l
JOIN requested_keys AS r USING (key)
WHERE l.status <> 'error';
