-- Which SFT sources and generation routes fed each category of the safety part of sft_dataset.
SELECT s.category, coalesce(a.source, 'unknown') AS source, coalesce(a.route, a.origin, 'source') AS route,
       count(*) AS sft_rows
FROM sft AS s
LEFT JOIN attack AS a USING (prompt_id)
WHERE s.kind = 'safety'
GROUP BY ALL
ORDER BY category, sft_rows DESC, source, route;
