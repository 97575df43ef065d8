-- Where each category's scored prompts were lost at selection, each row counted at the first cut it fails in
-- safety_sft_selected.sql's order: a missing feature (no response, score or perplexity), the perplexity cut,
-- the response-safety threshold, the instruction-safety threshold, then the per-category cap or the total.
WITH ranked AS (
    SELECT r.*, percent_rank() OVER (PARTITION BY r.lang ORDER BY r.perplexity) AS perplexity_rank
    FROM reward_features AS r
    WHERE r.perplexity IS NOT NULL AND r.chosen_score IS NOT NULL AND r.instruction_safety IS NOT NULL
      AND r.chosen_response IS NOT NULL AND r.scored_as IS NOT NULL
),
fates AS (
    SELECT r.category,
           CASE WHEN k.prompt_id IS NULL THEN 'missing_feature'
                WHEN k.perplexity_rank > params.perplexity_quantile THEN 'perplexity_cut'
                WHEN k.chosen_score < CASE k.scored_as WHEN 'single' THEN params.min_single_response_safety
                                                       ELSE params.min_response_safety END THEN 'response_safety'
                WHEN k.instruction_safety > params.max_instruction_safety THEN 'instruction_safety'
                WHEN s.prompt_id IS NULL THEN 'cap_or_total'
                ELSE 'selected' END AS fate
    FROM reward_features AS r
    CROSS JOIN params
    LEFT JOIN ranked AS k USING (prompt_id)
    LEFT JOIN selected AS s USING (prompt_id)
)
SELECT category,
       count(*) AS scored,
       count(*) FILTER (fate = 'missing_feature') AS missing_feature,
       count(*) FILTER (fate = 'perplexity_cut') AS perplexity_cut,
       count(*) FILTER (fate = 'response_safety') AS response_safety,
       count(*) FILTER (fate = 'instruction_safety') AS instruction_safety,
       count(*) FILTER (fate = 'cap_or_total') AS cap_or_total,
       count(*) FILTER (fate = 'selected') AS selected
FROM fates
GROUP BY category
ORDER BY category;
