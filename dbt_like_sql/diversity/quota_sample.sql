-- Rejection sampling to the quota: within each category every deduplicated candidate gets a seeded
-- random rank, and those ranked past the quota are rejected.
SELECT *
FROM candidates, params
WHERE duplicate_of IS NULL
QUALIFY row_number() OVER (PARTITION BY category ORDER BY hash(prompt_id || params.seed::VARCHAR)) <= params.quota
ORDER BY category, origin, prompt_id;
