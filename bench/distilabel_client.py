"""The peer in bench/openai_fanout.py: distilabel's OpenAILLM against the same server, run inside the
separate .venv-bench (distilabel's pins do not belong in madef's environment). distilabel sends one
batch of inputs concurrently per `generate` call, as its pipelines do with `input_batch_size`, so a
batch size of `concurrency` keeps that many requests in flight.

    .venv-bench/bin/python bench/distilabel_client.py BASE_URL REQUESTS CONCURRENCY  -> prints JSON
"""

import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")


def main() -> None:
    from distilabel.models.llms import OpenAILLM

    base_url, requests, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    llm = OpenAILLM(model="bench", base_url=base_url, api_key="not-needed", max_retries=8, timeout=60)
    llm.load()
    inputs = [[{"role": "user", "content": f"bench prompt {i}"}] for i in range(requests)]
    started = time.perf_counter()
    failed = 0
    for start in range(0, requests, concurrency):
        for output in llm.generate(inputs=inputs[start : start + concurrency], num_generations=1, max_new_tokens=8):
            failed += sum(1 for text in output["generations"] if not text)
    elapsed = time.perf_counter() - started
    print(json.dumps({"rate": requests / elapsed, "failed": failed}))


if __name__ == "__main__":
    main()
