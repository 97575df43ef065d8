-- The prompts the labeler tags: every prompt, or a seeded sample of `sample_per_source` per source.
SELECT p.prompt_id, p.source, p.lang, p.prompt, p.source_category
FROM prompts AS p, params
QUALIFY params.sample_per_source IS NULL
     OR row_number() OVER (PARTITION BY p.source ORDER BY hash(p.prompt_id || params.seed::VARCHAR)) <= params.sample_per_source
ORDER BY p.source, p.prompt_id;
