-- General instructions sampled to `sample_size`, stratified by source (proportional, seeded).
WITH sized AS (
    SELECT *, count(*) OVER (PARTITION BY source) AS source_rows, count(*) OVER () AS all_rows
    FROM general
)
SELECT prompt_id, source, lang, prompt, response
FROM sized, params
WHERE response IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY source ORDER BY hash(prompt_id || params.seed::VARCHAR))
        <= ceil(params.sample_size * source_rows / all_rows)
ORDER BY source, prompt_id;
