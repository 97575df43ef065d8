-- General instructions sampled to `sample_size` (seeded): `zh_share` of them Chinese and the rest in the other
-- languages (the paper's general data is Chinese-first); null `zh_share`: each side in proportion to its rows.
-- Within a side, each source and language is sampled in proportion to its rows; a side with fewer rows than
-- its share gives all it has (the metadata reports the achieved share).
WITH answered AS (
    SELECT *, CASE WHEN lang = 'zh' THEN 'zh' ELSE 'other' END AS side
    FROM general
    WHERE response IS NOT NULL
),
sized AS (
    SELECT a.*,
           count(*) OVER (PARTITION BY a.source, a.lang) AS stratum_rows,
           count(*) OVER (PARTITION BY a.side) AS side_rows,
           CASE WHEN params.zh_share IS NULL
                THEN params.sample_size * count(*) OVER (PARTITION BY a.side) / count(*) OVER ()
                WHEN a.side = 'zh' THEN round(params.sample_size * params.zh_share)
                ELSE params.sample_size - round(params.sample_size * params.zh_share) END AS side_target
    FROM answered AS a, params
)
SELECT prompt_id, source, lang, prompt, response
FROM sized, params
QUALIFY row_number() OVER (PARTITION BY source, lang ORDER BY hash(prompt_id || params.seed::VARCHAR))
        <= ceil(side_target * stratum_rows / side_rows)
ORDER BY source, lang, prompt_id;
