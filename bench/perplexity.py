"""Perplexity scorer on the bundled model: the backend's batched, length-sorted path against a
per-sample loop (batch size 1), on real prompts from the bundled data. Tokens/s (scored tokens) and
the ratio, medians of --repeats runs, both in this process on the same weights.

    .venv/bin/python bench/perplexity.py [--prompts 500] [--batch-size 16] [--repeats 3]
"""

import argparse
import json
import statistics
import time

from madef_assets.llm.transformers_backend import TransformersBackend
from madef_assets.llm.model_files import resolve_model_path
from madef_assets.settings import PROJECT_ROOT, load_settings


def bundled_prompts(count: int) -> list[str]:
    """Real prompts of mixed length and language: S-Eval zh + en base-risk prompts, in file order."""
    prompts = []
    for name in ("base_risk_zh_sample.jsonl", "base_risk_en_sample.jsonl"):
        for line in (PROJECT_ROOT / "data" / "s_eval" / name).read_text(encoding="utf-8").splitlines():
            prompts.append(json.loads(line)["prompt"])
    return [prompts[i * len(prompts) // count] for i in range(count)]


def run(backend: TransformersBackend, texts: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    results = dict(backend.perplexity(texts))
    elapsed = time.perf_counter() - started
    assert all(r.status == "ok" for r in results.values())
    return elapsed, sum(r.prompt_tokens - 1 for r in results.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    settings = load_settings("demo", env={})
    path = resolve_model_path("bundled:gemma3-270m", settings.models_dir)
    texts = bundled_prompts(args.prompts)
    batched = TransformersBackend(path, "bundled:gemma3-270m", batch_size=args.batch_size)
    single = TransformersBackend(path, "bundled:gemma3-270m", batch_size=1)
    run(batched, texts[:16])  # warm-up: weights loaded, kernels initialised
    rows = {}
    for name, backend in (("per-sample loop (batch 1)", single), (f"batched, length-sorted (batch {args.batch_size})", batched)):
        timings = [run(backend, texts) for _ in range(args.repeats)]
        seconds = statistics.median(t for t, _ in timings)
        rows[name] = (seconds, timings[0][1] / seconds)
    print(f"{args.prompts} prompts, {timings[0][1]} scored tokens, median of {args.repeats}\n")
    print("| path | seconds | tokens/s | ratio |\n|---|---|---|---|")
    baseline = next(iter(rows.values()))[1]
    for name, (seconds, rate) in rows.items():
        print(f"| {name} | {seconds:.1f} | {rate:.0f} | {rate / baseline:.2f} |")


if __name__ == "__main__":
    main()
