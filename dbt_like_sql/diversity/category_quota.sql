-- Train-eligible prompts per category against the configured target; thin categories get generation.
WITH counts AS (
    SELECT category, count(*) AS prompts
    FROM prompt_categories
    WHERE category IS NOT NULL AND source IN (SELECT source FROM train_sources)
    GROUP BY category
)
SELECT
    c.category,
    coalesce(n.prompts, 0)                               AS prompts,
    params.quota                                         AS target,
    coalesce(n.prompts, 0) < params.quota                AS thin,
    greatest(params.quota - coalesce(n.prompts, 0), 0)   AS deficit
FROM categories AS c
CROSS JOIN params
LEFT JOIN counts AS n USING (category)
ORDER BY c.position;
