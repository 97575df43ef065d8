-- Each jailbreak rubric answer's outcomes for the paired tests (`decided`: jailbreak_rubric_decided.sql, as the
-- scores count them), per method and under '(all)': its StrongREJECT score x 100 (a mean, the report's scale) and
-- whether it was refused (a rate); a pending answer has neither.
SELECT 'jailbreak_rubric score' AS view, method AS row, candidate, item_id AS item,
       100.0 * score AS outcome, false AS binary
FROM decided
UNION ALL
SELECT 'jailbreak_rubric refusal' AS view, method AS row, candidate, item_id AS item,
       CAST(refused AS DOUBLE) AS outcome, true AS binary
FROM decided;
