-- Rejection sampling to the quota: within each category every deduplicated candidate gets a seeded
-- random rank, and those ranked past the category's quota are rejected.
SELECT c.*
FROM candidates AS c
JOIN quotas AS q USING (category), params
WHERE c.duplicate_of IS NULL
QUALIFY row_number() OVER (PARTITION BY c.category ORDER BY hash(c.prompt_id || params.seed::VARCHAR)) <= q.quota
ORDER BY c.category, c.origin, c.prompt_id;
