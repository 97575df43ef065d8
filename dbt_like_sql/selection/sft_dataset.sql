-- The SFT set: selected safety samples and the general sample, in LLaMA-Factory's alpaca fields.
SELECT prompt_id, 'safety' AS kind, category, lang, prompt AS instruction, '' AS input, response AS output
FROM safety_sft_selected
UNION ALL
SELECT prompt_id, 'general' AS kind, source AS category, lang, prompt AS instruction, '' AS input, response AS output
FROM general_sft_sample
ORDER BY kind DESC, category, prompt_id;
