-- One category per attack prompt: the majority of its mapped intent labels (ties: the label named
-- first; a label counts when the taxonomy file maps it, the labeler chose its category confidently (llm_choice)
-- or a reviewer decided it), else the data set's own
-- category mapped through the taxonomy.
WITH label_rows AS (
    SELECT prompt_id, unnest(label_keys) AS key, generate_subscripts(label_keys, 1) AS pos
    FROM intent_labels
    WHERE status = 'ok'
),
mapped AS (
    SELECT l.prompt_id, t.category, count(*) AS n, min(l.pos) AS first_pos
    FROM label_rows AS l
    JOIN label_taxonomy AS t
      ON t.kind = 'intent_label' AND t.key = l.key AND t.status IN ('accepted', 'rule', 'llm_choice', 'reviewed')
    GROUP BY l.prompt_id, t.category
),
intent AS (
    SELECT prompt_id,
           list(category ORDER BY n DESC, first_pos) AS intent_categories,
           arg_max(category, n * 1000 - first_pos)   AS intent_category
    FROM mapped
    GROUP BY prompt_id
),
source_map AS (
    SELECT source, key AS source_category, category
    FROM label_taxonomy
    WHERE kind = 'source_category' AND status = 'accepted'
)
SELECT
    p.prompt_id, p.source, p.lang, p.prompt, p.response, p.source_category, p.attack_method,
    i.intent_categories,
    s.category                                   AS source_mapped_category,
    coalesce(i.intent_category, s.category)      AS category,
    CASE WHEN i.intent_category IS NOT NULL THEN 'intent'
         WHEN s.category IS NOT NULL THEN 'source' END AS category_origin,
    l.prompt_id IS NOT NULL                      AS labeled,
    CASE WHEN i.intent_category IS NULL OR s.category IS NULL THEN NULL
         ELSE list_contains(i.intent_categories, s.category) END AS agrees_with_source
FROM prompts AS p
LEFT JOIN intent AS i USING (prompt_id)
LEFT JOIN source_map AS s ON s.source = p.source AND s.source_category = p.source_category
LEFT JOIN (SELECT DISTINCT prompt_id FROM intent_labels) AS l USING (prompt_id)
ORDER BY p.source, p.prompt_id;
