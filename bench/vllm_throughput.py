"""Generation throughput of the vllm backend on the bundled model, against the transformers backend
on the same device in the same run: output tokens/s and the ratio, medians of --repeats runs. Needs a
CUDA device and the `vllm` extra (the lent GPU machine); elsewhere only the transformers row can run.

    .venv/bin/python bench/vllm_throughput.py [--prompts 500] [--max-new-tokens 128] [--repeats 3]
    .venv/bin/python bench/vllm_throughput.py --backends transformers --prompts 8 --max-new-tokens 8   # CPU
"""

import argparse
import statistics
import time

from perplexity import bundled_prompts

from madef_assets.llm.backends import build_backend
from madef_assets.llm.types import GenerationParams
from madef_assets.settings import load_settings

OPTIONS = {
    "vllm": {"gpu_memory_utilization": 0.5, "max_model_len": 1024, "dtype": "bfloat16"},
    "transformers": {"batch_size": 64},
}


def measure(backend, prompts: list[str], params: GenerationParams) -> tuple[float, int]:
    started = time.perf_counter()
    results = dict(backend.generate(prompts, params))
    elapsed = time.perf_counter() - started
    failed = [i for i, r in results.items() if r.status != "ok"]
    if failed:
        raise SystemExit(f"{len(failed)} prompts failed, e.g. {results[failed[0]].error}")
    return elapsed, sum(r.completion_tokens for r in results.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--prompts", type=int, default=500, help="at most 500, the bundled prompts; more would repeat some"
    )
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="transformers,vllm", help="the first is the baseline")
    args = parser.parse_args()
    models_dir = load_settings("demo", env={}).models_dir
    prompts = bundled_prompts(args.prompts)
    # Greedy with a fixed length budget, so every backend writes about the same number of tokens.
    params = GenerationParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    rows = {}
    for name in args.backends.split(","):
        backend = build_backend(name, "bundled:gemma3-270m", OPTIONS[name], models_dir)
        measure(backend, prompts[:8], params)  # warm-up: weights loaded, kernels compiled
        timings = [measure(backend, prompts, params) for _ in range(args.repeats)]
        seconds = statistics.median(t for t, _ in timings)
        rows[name] = (seconds, statistics.median(n for _, n in timings))
        backend.close()
    print(f"{args.prompts} prompts, up to {args.max_new_tokens} new tokens, greedy, median of {args.repeats}\n")
    print("| backend | options | seconds | output tokens | tokens/s | ratio |\n|---|---|---|---|---|---|")
    baseline = None
    for name, (seconds, tokens) in rows.items():
        rate = tokens / seconds
        baseline = baseline or rate
        print(f"| {name} | {OPTIONS[name]} | {seconds:.1f} | {tokens:.0f} | {rate:.0f} | {rate / baseline:.2f} |")


if __name__ == "__main__":
    main()
