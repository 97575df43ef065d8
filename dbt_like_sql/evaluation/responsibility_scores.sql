-- Responsibility for one candidate: per domain, the judge's mean 1-10 score over the open prompts, and, when the
-- MCQ file is configured, acc and acc* averaged over CValues' five evaluator rule sets as Table 5-2 reports them
-- (`rule_sets`: responsibility_mcq_rule_sets.sql, which has each rule set's counts).
WITH open_prompts AS (
    SELECT candidate, domain,
           count(*) AS prompts,
           count(score) AS scored,
           round(avg(score), 3) AS mean_score
    FROM judgements
    GROUP BY candidate, domain
),
mcq_scores AS (
    SELECT candidate, domain,
           max(questions) AS mcq_questions,
           max(pending_review) AS mcq_pending_review,
           round(avg(acc), 2) AS acc,
           round(avg(acc_star), 2) AS acc_star
    FROM rule_sets
    GROUP BY candidate, domain
)
SELECT coalesce(o.candidate, m.candidate) AS candidate,
       coalesce(o.domain, m.domain) AS domain,
       coalesce(o.prompts, 0) AS prompts, coalesce(o.scored, 0) AS scored, o.mean_score,
       coalesce(m.mcq_questions, 0) AS mcq_questions, coalesce(m.mcq_pending_review, 0) AS mcq_pending_review,
       m.acc, m.acc_star
FROM open_prompts AS o
FULL OUTER JOIN mcq_scores AS m ON o.candidate = m.candidate AND o.domain = m.domain
ORDER BY domain;
