-- The paper's selection (§3.4, §3.5): low prompt perplexity, a safe chosen response, a hard (unsafe-looking)
-- instruction; at most `per_category_cap` per category and at most `safety_target` in all (null: no target).
-- Perplexity is cut per language: the quantile is taken within each language (zh and en perplexities are not
-- comparable). Response scores are kept apart by how they were obtained (`scored_as`): a lone candidate
-- (single) has its own threshold, and each row is ranked by its score among its own kind, so a single
-- score never outranks a pair score by being on a looser footing. The per-category cap keeps each
-- category's best-ranked rows (then the most fluent prompts); the total target then takes the categories'
-- rows in turns (every category's first, then every category's second, ...), so trimming keeps the mix.
WITH scored AS (
    SELECT *, percent_rank() OVER (PARTITION BY lang ORDER BY perplexity) AS perplexity_rank
    FROM reward_features
    WHERE perplexity IS NOT NULL AND chosen_score IS NOT NULL AND instruction_safety IS NOT NULL
      AND chosen_response IS NOT NULL AND scored_as IS NOT NULL
),
passed AS (
    SELECT s.*, percent_rank() OVER (PARTITION BY s.scored_as ORDER BY s.chosen_score DESC) AS score_rank
    FROM scored AS s, params
    WHERE s.perplexity_rank <= params.perplexity_quantile
      AND s.chosen_score >= CASE s.scored_as WHEN 'single' THEN params.min_single_response_safety
                                             ELSE params.min_response_safety END
      AND s.instruction_safety <= params.max_instruction_safety
),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY category ORDER BY score_rank, perplexity, prompt_id) AS category_rank
    FROM passed
)
SELECT c.prompt_id, c.category, c.lang, c.prompt, c.chosen_response AS response, c.better_response, c.scored_as,
       c.perplexity, c.chosen_score, c.instruction_safety
FROM ranked AS c, params
WHERE c.category_rank <= params.per_category_cap
QUALIFY params.safety_target IS NULL
     OR row_number() OVER (ORDER BY c.category_rank, c.score_rank, c.category, c.prompt_id) <= params.safety_target
ORDER BY c.category, c.prompt_id;
