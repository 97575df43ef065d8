-- Each New-Safety answer's final label: a reviewer's decision overrides the judge's label; an answer the judge
-- was uncertain about and nobody has reviewed yet stays 'uncertain'. Feeds new_safety_scores and
-- new_safety_outcomes, so the rates and the paired tests read the same labels.
SELECT j.candidate, j.view, j.category, j.prompt_id, j.review_key,
       coalesce(d.decision, j.judge_label) AS final_label,
       d.decision IS NOT NULL AS from_review
FROM judgements AS j
LEFT JOIN decisions AS d USING (review_key);
