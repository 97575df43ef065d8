-- Rows per source: normalized, quarantined, their sum (= rows read) and the quarantine share.
WITH normalized AS (
    SELECT
        source,
        count(*)                                  AS rows_normalized,
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
)
SELECT
    source,
    coalesce(n.rows_normalized, 0) + coalesce(r.rows_quarantined, 0)  AS rows_in,
    coalesce(n.rows_normalized, 0)                                     AS rows_normalized,
    coalesce(r.rows_quarantined, 0)                                    AS rows_quarantined,
    round(coalesce(r.rows_quarantined, 0)
          / (coalesce(n.rows_normalized, 0) + coalesce(r.rows_quarantined, 0)), 4) AS quarantine_share,
    coalesce(n.langs, 0)              AS langs,
    coalesce(n.categories, 0)         AS categories,
    coalesce(n.with_response, 0)      AS with_response,
    coalesce(n.with_attack_method, 0) AS with_attack_method
FROM normalized AS n
FULL OUTER JOIN rejected AS r USING (source)
ORDER BY source;
