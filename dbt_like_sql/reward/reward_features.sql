-- One row per instruction: the three features, the better (safer) candidate response, and how its score was
-- obtained (`scored_as`: pair, both candidates judged together; single, a lone candidate judged alone).
SELECT
    r.prompt_id, r.category, r.lang, r.prompt,
    p.perplexity,
    s.safe_response_score,
    s.original_response_score,
    s.scored_as,
    i.instruction_safety,
    CASE
        WHEN s.safe_response_score IS NULL AND s.original_response_score IS NULL THEN NULL
        WHEN s.original_response_score IS NULL OR s.safe_response_score >= s.original_response_score THEN 'safe_response'
        ELSE 'original_response'
    END AS better_response,
    CASE
        WHEN s.original_response_score IS NULL OR s.safe_response_score >= s.original_response_score THEN r.safe_response
        ELSE r.original_response
    END AS chosen_response,
    greatest(s.safe_response_score, s.original_response_score) AS chosen_score
FROM safe_responses AS r
LEFT JOIN prompt_perplexity AS p ON p.prompt_id = r.prompt_id AND p.status = 'ok'
LEFT JOIN response_safety_scores AS s ON s.prompt_id = r.prompt_id AND s.status = 'ok'
LEFT JOIN instruction_safety_scores AS i ON i.prompt_id = r.prompt_id AND i.status = 'ok'
ORDER BY r.category, r.prompt_id;
