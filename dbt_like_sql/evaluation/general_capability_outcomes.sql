-- Each general-capability question's outcome for the paired tests (correct, or passed for HumanEval), per
-- benchmark over all its questions: the rows of the report's general table.
SELECT 'general' AS view, benchmark AS row, candidate, CAST(item_id AS VARCHAR) AS item,
       CASE WHEN correct THEN 1.0 ELSE 0.0 END AS outcome, true AS binary
FROM predictions;
