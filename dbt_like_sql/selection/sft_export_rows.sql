-- The SFT rows as they are shared (Parquet, dataset card): each row's source (general rows: their general
-- source; augmented rows: their parent's source, whose terms they carry; `augmented` when the parent is not in
-- attack_prompts), generation route (`original`, general rows `general`) and the three reward features of the
-- selection (null for general rows).
SELECT s.prompt_id, s.instruction, s.input, s.output, s.category, s.lang,
       CASE WHEN s.kind = 'general' THEN s.category ELSE coalesce(parent.source, a.source, 'unknown') END AS source,
       CASE WHEN s.kind = 'general' THEN 'general' ELSE coalesce(a.route, 'original') END AS route,
       p.perplexity, p.chosen_score AS response_safety, p.instruction_safety
FROM sft AS s
LEFT JOIN attack AS a ON a.prompt_id = s.prompt_id AND s.kind = 'safety'
LEFT JOIN attack AS parent ON parent.prompt_id = a.parent_prompt_id
LEFT JOIN selected AS p ON p.prompt_id = s.prompt_id AND s.kind = 'safety'
ORDER BY s.kind DESC, s.category, s.prompt_id;
