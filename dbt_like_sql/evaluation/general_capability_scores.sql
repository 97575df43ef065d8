-- Accuracy (pass@1 for HumanEval) per benchmark and subject, and per benchmark over all its questions
-- (subject = '(all)'), for one candidate, with the benchmark's eval fingerprint.
WITH per_subject AS (
    SELECT candidate, benchmark, subject, count(*) AS questions, count(*) FILTER (correct) AS correct
    FROM predictions
    GROUP BY candidate, benchmark, subject
    UNION ALL
    SELECT candidate, benchmark, '(all)', count(*), count(*) FILTER (correct)
    FROM predictions
    GROUP BY candidate, benchmark
),
fingerprints AS (
    SELECT DISTINCT candidate, benchmark, backend, model, model_hash, chat_template, params, dataset_hash
    FROM predictions
)
SELECT s.candidate, s.benchmark, s.subject, s.questions, s.correct,
       round(100.0 * s.correct / s.questions, 2) AS score,
       f.backend, f.model, f.model_hash, f.chat_template, f.params, f.dataset_hash
FROM per_subject AS s
JOIN fingerprints AS f USING (candidate, benchmark)
ORDER BY s.benchmark, s.subject;
