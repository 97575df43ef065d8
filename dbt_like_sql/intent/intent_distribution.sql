-- Prompts per source x category, and the most frequent raw labels of each source and of all sources with the
-- category each maps to: one label distribution per data set, as the paper's Figures 3-3..3-5 (§3.2).
WITH label_rows AS (
    SELECT source, unnest(labels) AS label, unnest(label_keys) AS key
    FROM intent_labels
    WHERE status = 'ok'
),
label_counts AS (
    SELECT source, key, mode(label) AS label, count(*) AS prompts FROM label_rows GROUP BY source, key
    UNION ALL
    SELECT 'all' AS source, key, mode(label) AS label, count(*) AS prompts FROM label_rows GROUP BY key
),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY source ORDER BY prompts DESC, label) AS rank
    FROM label_counts
)
SELECT 'source_category' AS kind, source, coalesce(category, 'unmapped') AS key, count(*) AS prompts, category
FROM prompt_categories
GROUP BY source, category
UNION ALL
SELECT 'raw_label' AS kind, r.source, r.label AS key, r.prompts, t.category
FROM ranked AS r
LEFT JOIN label_taxonomy AS t ON t.kind = 'intent_label' AND t.key = r.key
WHERE r.rank <= (SELECT top_labels FROM params)
ORDER BY kind, source, prompts DESC, key;
