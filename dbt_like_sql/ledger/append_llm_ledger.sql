INSERT INTO llm_ledger BY NAME
SELECT * FROM new_ledger_rows;
