-- Rows per source: normalized, quarantined, merged (preference pairs of a prompt whose kept row is
-- normalized: each kept row's meta counts them as merged_rows), their sum (= rows read) and the
-- quarantine share.
WITH normalized AS (
    SELECT
        source,
        count(*)                                  AS rows_normalized,
        sum(merged_rows)                          AS rows_merged,
        count(DISTINCT lang)                      AS langs,
        count(DISTINCT source_category)           AS categories,
        count(*) FILTER (WHERE response IS NOT NULL)      AS with_response,
        count(*) FILTER (WHERE attack_method IS NOT NULL) AS with_attack_method
    FROM prompts
    GROUP BY source
),
rejected AS (
    SELECT source, count(*) AS rows_quarantined
    FROM quarantine
    GROUP BY source
),
counted AS (
    SELECT
        source,
        coalesce(n.rows_normalized, 0)   AS rows_normalized,
        coalesce(r.rows_quarantined, 0)  AS rows_quarantined,
        coalesce(n.rows_merged, 0)::BIGINT AS rows_merged,
        n.langs, n.categories, n.with_response, n.with_attack_method
    FROM normalized AS n
    FULL OUTER JOIN rejected AS r USING (source)
)
SELECT
    source,
    rows_normalized + rows_quarantined + rows_merged  AS rows_in,
    rows_normalized,
    rows_quarantined,
    rows_merged,
    round(rows_quarantined / (rows_normalized + rows_quarantined + rows_merged), 4) AS quarantine_share,
    coalesce(langs, 0)              AS langs,
    coalesce(categories, 0)         AS categories,
    coalesce(with_response, 0)      AS with_response,
    coalesce(with_attack_method, 0) AS with_attack_method
FROM counted
ORDER BY source;
