-- Prompts per source x category (Figures 3-3..3-5 of the paper) and the most frequent raw labels.
SELECT 'source_category' AS kind, source, coalesce(category, 'unmapped') AS key, count(*) AS prompts
FROM prompt_categories
GROUP BY source, category
UNION ALL
SELECT 'raw_label' AS kind, 'all' AS source, label AS key, count AS prompts
FROM (
    SELECT label, count, row_number() OVER (ORDER BY count DESC, label) AS rank
    FROM label_taxonomy
    WHERE kind = 'intent_label'
)
WHERE rank <= (SELECT top_labels FROM params)
ORDER BY kind, source, prompts DESC, key;
