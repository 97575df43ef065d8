-- Train-eligible prompts per category against its quota (`quotas`: the configured one, or one derived from
-- method.sft_total and the measured pass rates); thin categories get generation.
WITH counts AS (
    SELECT category, count(*) AS prompts
    FROM prompt_categories
    WHERE category IS NOT NULL AND source IN (SELECT source FROM train_sources)
    GROUP BY category
)
SELECT
    c.category,
    coalesce(n.prompts, 0)                              AS prompts,
    q.quota                                             AS target,
    coalesce(n.prompts, 0) < q.quota                    AS thin,
    greatest(q.quota - coalesce(n.prompts, 0), 0)       AS deficit,
    q.sft_rows_target,
    q.pass_rate,
    q.pass_rate_origin
FROM categories AS c
JOIN quotas AS q USING (category)
LEFT JOIN counts AS n USING (category)
ORDER BY c.position;
