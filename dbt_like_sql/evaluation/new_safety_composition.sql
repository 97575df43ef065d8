-- What the New-Safety benchmark holds per category: how many prompts, from which sources and languages, and
-- how their category was decided (intent: the labeler through the taxonomy; source: the data set's category).
SELECT category,
       count(*) AS prompts,
       string_agg(DISTINCT source, ', ' ORDER BY source) AS sources,
       count(*) FILTER (lang = 'zh') AS zh,
       count(*) FILTER (lang <> 'zh') AS other_languages,
       count(*) FILTER (category_origin = 'intent') AS by_labeler,
       count(*) FILTER (category_origin = 'source') AS by_source_category
FROM benchmark
GROUP BY category
ORDER BY category;
