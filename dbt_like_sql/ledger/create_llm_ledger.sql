-- The LLM-call ledger (see madef_assets/llm/ledger.py for the key), append-only: a call finished again
-- (an error retried, two processes racing) adds a row, and the latest final row per key wins at lookup.
-- No unique index: DuckDB loads an index at every connection and rewrites it at every checkpoint, which
-- made each flush cost grow with the ledger (BENCHMARKS.md, "The ledger at scale").
CREATE TABLE IF NOT EXISTS llm_ledger (
    key               VARCHAR NOT NULL,
    key_hash          UBIGINT NOT NULL,   -- the key's first 64 bits: lookups scan this narrow column first
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
