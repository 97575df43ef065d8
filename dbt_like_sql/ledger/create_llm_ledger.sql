-- The LLM-call ledger: one row per distinct call (see madef_assets/llm/ledger.py for the key).
CREATE TABLE IF NOT EXISTS llm_ledger (
    key               VARCHAR PRIMARY KEY,
    role              VARCHAR NOT NULL,
    kind              VARCHAR NOT NULL,   -- generate | option_logprobs | perplexity
    backend           VARCHAR NOT NULL,
    model             VARCHAR NOT NULL,   -- JSON fingerprint: model id, revision/hash, chat template
    template_version  VARCHAR,
    params            VARCHAR,            -- JSON sampling parameters (or the options scored)
    prompt            VARCHAR NOT NULL,   -- the rendered prompt as sent
    output            VARCHAR,            -- text, or JSON for scores
    status            VARCHAR NOT NULL,   -- ok | error | parse_error | refused
    error             VARCHAR,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    latency_s         DOUBLE,
    run_id            VARCHAR,
    created_at        TIMESTAMP NOT NULL
);
