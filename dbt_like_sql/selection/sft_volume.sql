-- The SFT set's volume per category against its target: the rows it should bring (method.sft_total's share,
-- when the quotas are derived), the attack prompts asked for (quota) and collected, those selected, and those in
-- the set after decontamination; the general sample as one row.
SELECT q.category,
       q.sft_rows_target,
       q.target                                                           AS quota,
       (SELECT count(*) FROM attack AS a WHERE a.category = q.category)   AS collected,
       (SELECT count(*) FROM selected AS s WHERE s.category = q.category) AS selected,
       (SELECT count(*) FROM sft AS f WHERE f.kind = 'safety' AND f.category = q.category) AS in_sft
FROM quotas AS q
UNION ALL
SELECT 'general', params.general_target, NULL, NULL, NULL, (SELECT count(*) FROM sft WHERE kind = 'general')
FROM params;
