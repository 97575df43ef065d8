-- The paper's selection: low prompt perplexity, a safe chosen response, a hard (unsafe-looking)
-- instruction; at most `per_category_cap` per category, safest responses and most fluent prompts first.
WITH scored AS (
    SELECT *, percent_rank() OVER (ORDER BY perplexity) AS perplexity_rank
    FROM reward_features
    WHERE perplexity IS NOT NULL AND chosen_score IS NOT NULL AND instruction_safety IS NOT NULL
      AND chosen_response IS NOT NULL
)
SELECT s.prompt_id, s.category, s.lang, s.prompt, s.chosen_response AS response, s.better_response,
       s.perplexity, s.chosen_score, s.instruction_safety
FROM scored AS s, params
WHERE s.perplexity_rank <= params.perplexity_quantile
  AND s.chosen_score >= params.min_response_safety
  AND s.instruction_safety <= params.max_instruction_safety
QUALIFY row_number() OVER (PARTITION BY s.category ORDER BY s.chosen_score DESC, s.perplexity, s.prompt_id) <= params.per_category_cap
ORDER BY s.category, s.prompt_id;
