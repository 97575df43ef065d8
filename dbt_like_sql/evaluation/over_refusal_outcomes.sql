-- Each XSTest answer's outcome for the paired tests (`decided`: over_refusal_decided.sql, as the rates count
-- it), in the report's item rows, per type and over all types.
SELECT 'over_refusal' AS view,
       format('{} prompts, {}: {} rate', prompt_label, type, measure) AS row,
       candidate, prompt_id AS item,
       CASE WHEN good THEN 1.0 ELSE 0.0 END AS outcome,
       true AS binary
FROM decided;
