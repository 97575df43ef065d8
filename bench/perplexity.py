"""Perplexity scorer on the bundled model: the backend's batched, length-sorted path against the
per-sample loop everyone writes first (`model(ids, labels=ids).loss` per text), and the backend at
batch size 1 in between, on real prompts from the bundled data. Tokens/s (scored tokens) and ratios,
medians of --repeats runs, all in this process on the same weights.

    .venv/bin/python bench/perplexity.py [--prompts 500] [--batch-size 32] [--repeats 3]
"""

import argparse
import json
import math
import statistics
import time

import torch

from madef_assets.llm.model_files import resolve_model_path
from madef_assets.llm.transformers_backend import TransformersBackend
from madef_assets.project import PROJECT_ROOT
from madef_assets.settings import load_settings


def bundled_prompts(count: int) -> list[str]:
    """Real prompts of mixed length and language: S-Eval zh + en base-risk prompts, in file order."""
    prompts = []
    for name in ("base_risk_zh_sample.jsonl", "base_risk_en_sample.jsonl"):
        for line in (PROJECT_ROOT / "data" / "s_eval" / name).read_text(encoding="utf-8").splitlines():
            prompts.append(json.loads(line)["prompt"])
    return [prompts[i * len(prompts) // count] for i in range(count)]


def run(backend: TransformersBackend, texts: list[str]) -> tuple[float, list[float]]:
    started = time.perf_counter()
    results = dict(backend.perplexity(texts))
    elapsed = time.perf_counter() - started
    assert all(r.status == "ok" for r in results.values())
    return elapsed, [results[i].output for i in range(len(texts))]


@torch.inference_mode()
def run_per_sample_loop(backend: TransformersBackend, texts: list[str]) -> tuple[float, list[float]]:
    started = time.perf_counter()
    values = []
    for text in texts:
        ids = torch.tensor([backend.tokenizer(text)["input_ids"]])
        values.append(math.exp(float(backend.model(input_ids=ids, labels=ids).loss)))
    return time.perf_counter() - started, values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    settings = load_settings("demo", env={})
    path = resolve_model_path("bundled:gemma3-270m", settings.models_dir)
    texts = bundled_prompts(args.prompts)
    batched = TransformersBackend(path, "bundled:gemma3-270m", batch_size=args.batch_size)
    single = TransformersBackend(path, "bundled:gemma3-270m", batch_size=1)
    scored_tokens = sum(len(ids) - 1 for ids in batched.tokenizer(texts)["input_ids"])
    run(batched, texts[:16])  # warm-up: weights loaded, kernels initialised
    paths = {
        "per-sample loop, `model(ids, labels=ids).loss`": lambda: run_per_sample_loop(batched, texts),
        "madef backend, batch 1": lambda: run(single, texts),
        f"madef backend, batched, length-sorted (batch {args.batch_size})": lambda: run(batched, texts),
    }
    rows, reference = {}, None
    for name, measure in paths.items():
        timings = [measure() for _ in range(args.repeats)]
        values = timings[0][1]
        reference = reference or values
        drift = max(abs(v - r) / r for v, r in zip(values, reference))
        rows[name] = (statistics.median(t for t, _ in timings), drift)
    print(f"{args.prompts} prompts, {scored_tokens} scored tokens, median of {args.repeats}\n")
    print("| path | seconds | tokens/s | ratio | max relative difference in perplexity |\n|---|---|---|---|---|")
    baseline = next(iter(rows.values()))[0]
    for name, (seconds, drift) in rows.items():
        print(f"| {name} | {seconds:.1f} | {scored_tokens / seconds:.0f} | {baseline / seconds:.2f} | {drift:.1e} |")


if __name__ == "__main__":
    main()
