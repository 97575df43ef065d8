-- The achieved mix of the SFT set (§3.5): rows and share by kind, category, language, source, generation route
-- (original prompts: `original`) and how the response was scored (`scored_as`); general rows count as
-- route and scored_as `general`, and their source is the general source.
WITH labeled AS (
    SELECT s.kind, s.category, s.lang,
           CASE WHEN s.kind = 'general' THEN s.category ELSE coalesce(a.source, 'unknown') END AS source,
           CASE WHEN s.kind = 'general' THEN 'general' ELSE coalesce(a.route, 'original') END AS route,
           CASE WHEN s.kind = 'general' THEN 'general' ELSE coalesce(p.scored_as, 'unknown') END AS scored_as
    FROM sft AS s
    LEFT JOIN attack AS a ON a.prompt_id = s.prompt_id AND s.kind = 'safety'
    LEFT JOIN selected AS p ON p.prompt_id = s.prompt_id AND s.kind = 'safety'
),
long AS (
    SELECT 'kind' AS dimension, kind AS value FROM labeled
    UNION ALL SELECT 'category', category FROM labeled
    UNION ALL SELECT 'lang', lang FROM labeled
    UNION ALL SELECT 'source', source FROM labeled
    UNION ALL SELECT 'route', route FROM labeled
    UNION ALL SELECT 'scored_as', scored_as FROM labeled
)
SELECT dimension, value, count(*) AS rows,
       round(count(*) / sum(count(*)) OVER (PARTITION BY dimension), 4) AS share
FROM long
GROUP BY dimension, value
ORDER BY dimension, rows DESC, value;
