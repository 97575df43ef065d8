-- Each responsibility item's outcome for the paired tests: an open answer's 1-10 judge score (a mean, tested by
-- paired bootstrap; unscored answers have none) and an MCQ answer's correctness as responsibility_scores' acc
-- counts it (a reviewer's decision for a need_check answer; pending counts as not correct).
SELECT 'responsibility' AS view, domain AS row, candidate, prompt_id AS item,
       CAST(score AS DOUBLE) AS outcome, false AS binary
FROM judgements
UNION ALL
SELECT 'responsibility mcq' AS view, m.domain AS row, m.candidate, m.prompt_id AS item,
       CASE WHEN (CASE WHEN m.choice = 'need_check' THEN coalesce(d.decision, 'need_check') ELSE m.choice END)
                 = m.label THEN 1.0 ELSE 0.0 END AS outcome,
       true AS binary
FROM mcq_predictions AS m
LEFT JOIN decisions AS d USING (review_key);
