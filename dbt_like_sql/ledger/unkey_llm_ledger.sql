-- A ledger written before the append-only format (key PRIMARY KEY, no key_hash): its rows move into the
-- new table once, when madef first opens it.
INSERT INTO llm_ledger BY NAME
SELECT *, ('0x' || substr(key, 1, 16))::UBIGINT AS key_hash
FROM llm_ledger_keyed;
