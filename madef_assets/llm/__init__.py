"""The LLM layer: one interface, three backends (transformers, openai, vllm), and the call ledger."""
