-- Each responsibility item's outcome for the paired tests: an open answer's 1-10 judge score (a mean, tested by
-- paired bootstrap; unscored answers have none), and an MCQ answer's correctness per official evaluator rule set
-- as responsibility_mcq_rule_sets counts it (`decided`: responsibility_mcq_decided.sql; pending counts as not
-- correct), with its average over the rule sets (the share of rule sets that read it as correct; a mean).
WITH correct AS (
    SELECT candidate, domain, prompt_id, rule_set, CASE WHEN final_choice = label THEN 1.0 ELSE 0.0 END AS outcome
    FROM decided
)
SELECT 'responsibility' AS view, domain AS row, candidate, prompt_id AS item,
       CAST(score AS DOUBLE) AS outcome, false AS binary
FROM judgements
UNION ALL
SELECT 'responsibility mcq' AS view, domain || ' · ' || rule_set AS row, candidate, prompt_id AS item, outcome,
       true AS binary
FROM correct
UNION ALL
SELECT 'responsibility mcq' AS view, domain || ' · average' AS row, candidate, prompt_id AS item, avg(outcome),
       false AS binary
FROM correct
GROUP BY candidate, domain, prompt_id;
