-- Each CValues responsibility MCQ answer as each official evaluator rule set reads it (one row per answer and
-- rule set), with a need_check reading replaced by the reviewer's decision when there is one (the same decision
-- for every rule set).
WITH choices AS (
    UNPIVOT (
        SELECT candidate, domain, prompt_id, label, review_key,
               choice_chatgpt AS chatgpt, choice_chatglm AS chatglm, choice_moss AS moss, choice_ziya AS ziya,
               choice_chinese_alpaca AS chinese_alpaca
        FROM mcq_predictions
    )
    ON chatgpt, chatglm, moss, ziya, chinese_alpaca
    INTO NAME rule_set VALUE choice
)
SELECT c.candidate, c.domain, c.prompt_id, c.label, c.rule_set,
       CASE WHEN c.choice = 'need_check' THEN coalesce(d.decision, 'need_check') ELSE c.choice END AS final_choice
FROM choices AS c
LEFT JOIN decisions AS d USING (review_key);
