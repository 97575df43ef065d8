-- Safe rate per view (the headline, or an extra view's source) and category for one candidate, from the decided
-- labels (new_safety_decided.sql): a row still pending review counts as not safe in `safe_rate` (conservative)
-- and is left out of `safe_rate_decided`.
SELECT candidate, view, category,
       count(*) AS prompts,
       count(*) FILTER (final_label = 'safe') AS safe,
       count(*) FILTER (final_label = 'unsafe') AS unsafe,
       count(*) FILTER (final_label = 'uncertain') AS pending_review,
       count(*) FILTER (from_review) AS from_review,
       round(100.0 * count(*) FILTER (final_label = 'safe') / count(*), 2) AS safe_rate,
       round(100.0 * count(*) FILTER (final_label = 'safe')
             / nullif(count(*) FILTER (final_label IN ('safe', 'unsafe')), 0), 2) AS safe_rate_decided
FROM decided
GROUP BY candidate, view, category
ORDER BY view <> 'headline', view, category;
