"""The GPU check's steps, one subcommand each, run by bench/gpu_check.sh; every step appends one result
row to a JSON-lines file and `table` prints them as one Markdown table.

    python3 bench/gpu_check.py machine | model | throughput | release | table   [--results FILE]

`release` is the one-GPU story of a production run: two candidates evaluated back to back on the vLLM
backend (GPU memory measured before, while loaded and after each is closed), then a 2-step bf16
LLaMA-Factory training on the bundled model started right after (it only runs if the GPU is free).
Needs only torch, transformers, vllm and LLaMA-Factory (no Dagster): it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perplexity import bundled_prompts  # noqa: E402  (bench/ is not a package)

from madef_assets.llm.backends import build_backend  # noqa: E402
from madef_assets.llm.engines import ENGINES, free_gpu_problem, gpu_memory  # noqa: E402
from madef_assets.llm.model_files import resolve_model_path  # noqa: E402
from madef_assets.llm.types import GenerationParams  # noqa: E402
from madef_assets.secret_hygiene import child_env  # noqa: E402
from madef_assets.settings import load_settings  # noqa: E402

BUNDLED = "bundled:gemma3-270m"
GIB = 1 << 30


def gib(memory: tuple[int, int] | None) -> str:
    return "no CUDA" if memory is None else f"{memory[0] / GIB:.1f}/{memory[1] / GIB:.1f} GiB free"


def record(results: Path, step: str, status: str, detail: str, **numbers) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a", encoding="utf-8") as handle:
        handle.write(
            json.dumps({"step": step, "status": status, "detail": detail, **numbers}, ensure_ascii=False) + "\n"
        )
    print(f"[gpu_check] {step}: {status} — {detail}", flush=True)


def settings():
    return load_settings("demo", env={k: v for k, v in os.environ.items() if k != "MADEF_PROFILE"})


def models_dir() -> Path:
    return settings().models_dir


def work_dir() -> Path:
    return settings().state_dir / "gpu_check"


def vllm_options(**extra) -> dict:
    options = {"max_model_len": 1024, **extra}
    if os.environ.get("MADEF_VLLM_ATTENTION_BACKEND"):
        options["attention_backend"] = os.environ["MADEF_VLLM_ATTENTION_BACKEND"]
    return options


def step_machine(args) -> None:
    import torch
    import transformers

    try:
        import vllm

        vllm_version = vllm.__version__
    except ImportError as exc:
        vllm_version = f"not importable ({exc})"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    record(
        args.results,
        "machine",
        "ok",
        f"{device}; {gib(gpu_memory())}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, vllm {vllm_version}, Python {sys.version.split()[0]}",
    )


def step_model(args) -> None:
    started = time.perf_counter()
    path = resolve_model_path(BUNDLED, models_dir())
    record(args.results, "bundled model as HF folder", "ok", f"{path} in {time.perf_counter() - started:.1f} s")


def step_throughput(args) -> None:
    from vllm_throughput import OPTIONS, measure

    prompts = bundled_prompts(args.prompts)
    params = GenerationParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    rates = {}
    for position, name in enumerate(args.backends.split(",")):
        options = vllm_options(**OPTIONS["vllm"]) if name == "vllm" else OPTIONS[name]
        repeats = args.baseline_repeats if position == 0 else args.repeats
        try:
            backend = build_backend(name, BUNDLED, options, models_dir())
            started = time.perf_counter()
            measure(backend, prompts[:8], params)  # warm-up: weights loaded, kernels compiled
            warm_up = time.perf_counter() - started
            timings = sorted(measure(backend, prompts, params) for _ in range(repeats))
        except Exception as exc:
            record(args.results, f"generate throughput, {name}", "FAILED", f"{type(exc).__name__}: {str(exc)[-600:]}")
            ENGINES.release()
            continue
        seconds, tokens = timings[len(timings) // 2]
        rates[name] = tokens / seconds
        backend.close()
        record(
            args.results,
            f"generate throughput, {name}",
            "ok",
            f"{args.prompts} prompts, ≤{args.max_new_tokens} new tokens, greedy: {tokens} tokens in {seconds:.2f} s = "
            f"{rates[name]:.0f} tokens/s (median of {repeats}; load + warm-up {warm_up:.0f} s)",
            tokens_per_s=round(rates[name], 1),
        )
    if len(rates) == 2:
        baseline, other = rates.values()
        names = list(rates)
        record(args.results, "generate throughput ratio", "ok", f"{names[1]} / {names[0]} = {other / baseline:.2f}x")


def evaluate_candidate(name: str, path: Path, backend_name: str, prompts: list[str], max_new_tokens: int) -> dict:
    """The three capabilities an evaluation calls, on one candidate; GPU memory around it."""
    before = gpu_memory()
    started = time.perf_counter()
    # Eager (no CUDA graphs): this step is about memory coming back, the throughput step measures speed.
    options = (
        vllm_options(gpu_memory_utilization=0.4, dtype="bfloat16", enforce_eager=True)
        if backend_name == "vllm"
        else {"batch_size": 32}
    )
    backend = build_backend(backend_name, str(path), options, models_dir())
    answers = dict(backend.generate(prompts, GenerationParams(max_new_tokens=max_new_tokens)))
    letters = dict(backend.option_logprobs([p + "\n答案：(" for p in prompts], ["A", "B", "C", "D"]))
    perplexities = dict(backend.perplexity(prompts))
    loaded = gpu_memory()
    seconds = time.perf_counter() - started
    backend.close()
    after = gpu_memory()
    failed = sum(r.status != "ok" for results in (answers, letters, perplexities) for r in results.values())
    return {"candidate": name, "seconds": seconds, "failed": failed, "before": before, "loaded": loaded, "after": after}


def step_release(args) -> None:
    base = resolve_model_path(BUNDLED, models_dir())
    # A second candidate in another folder (links to the same files): another engine, as for other weights.
    other = work_dir() / "second-candidate"
    if not other.exists():
        other.mkdir(parents=True)
        for file in base.iterdir():
            (other / file.name).symlink_to(file)
    prompts = bundled_prompts(args.prompts)
    start = gpu_memory()
    for name, path in (("first", base), ("second", other)):
        attention = os.environ.get("MADEF_VLLM_ATTENTION_BACKEND", "default") if args.backend == "vllm" else "-"
        step = f"candidate {name} ({args.backend}, attention {attention}), {len(prompts)} prompts × 3 capabilities"
        try:
            outcome = evaluate_candidate(name, path, args.backend, prompts, args.max_new_tokens)
        except Exception as exc:  # recorded, and the next step still runs: this is a report, not a test
            record(args.results, step, "FAILED", f"{type(exc).__name__}: {str(exc)[-600:]}")
            ENGINES.release()
            continue
        held_after = None if start is None else (start[0] - outcome["after"][0]) / GIB
        status = "ok" if outcome["failed"] == 0 and (held_after is None or held_after < args.max_held_gib) else "FAILED"
        record(
            args.results,
            step,
            status,
            f"{outcome['seconds']:.1f} s incl. load; {outcome['failed']} failed rows; GPU before "
            f"{gib(outcome['before'])}, "
            f"loaded {gib(outcome['loaded'])}, after close {gib(outcome['after'])}"
            + ("" if held_after is None else f" (still held vs start: {held_after:.2f} GiB)"),
            held_after_close_gib=held_after,
        )
    record(
        args.results,
        "engines loaded after both candidates",
        "ok" if not ENGINES.loaded_keys(gpu_only=True) else "FAILED",
        f"GPU engines still loaded: {len(ENGINES.loaded_keys(gpu_only=True))}; loads "
        f"{dict(ENGINES.loads)}, releases {dict(ENGINES.releases)}",
    )
    if args.train_python:
        train_right_after(args, base)


def train_right_after(args, base: Path) -> None:
    from madef_assets.defs.selection.export import DATASET_NAME, write_llamafactory_dataset
    from madef_assets.defs.training.llamafactory_config import render_train_config, to_yaml

    problem = free_gpu_problem(gpu_memory(), args.min_free_fraction)
    if problem:
        record(args.results, "bf16 training after vLLM", "FAILED", f"not started: {problem}")
        return
    work = work_dir() / "training"
    shutil.rmtree(work, ignore_errors=True)
    rows = [
        {"instruction": p, "input": "", "output": "I can't help with that, but here is a safe alternative."}
        for p in bundled_prompts(16)
    ]
    write_llamafactory_dataset(rows, work / "data", ("alpaca",))
    overrides = {
        "template": "default",
        "cutoff_len": 128,
        "max_steps": 2,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1.0e-5,
        "bf16": True,
        "save_only_model": True,
        "save_steps": 2,
        "logging_steps": 1,
    }
    config = render_train_config(base, work / "data", DATASET_NAME, work / "checkpoint", overrides)
    (work / "train.yaml").write_text(to_yaml(config), encoding="utf-8")
    env = child_env({"PYTHONPATH": args.train_pythonpath or ""})
    started = time.perf_counter()
    with (work / "train.log").open("w") as log:
        code = subprocess.run(
            [args.train_python, "-m", "llamafactory.cli", "train", str(work / "train.yaml")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ).returncode
    seconds = time.perf_counter() - started
    losses = []
    trainer_log = work / "checkpoint" / "trainer_log.jsonl"
    if trainer_log.exists():
        losses = [json.loads(line).get("loss") for line in trainer_log.read_text().splitlines()]
    log_text = (work / "train.log").read_text(errors="replace")
    (args.results.parent / "train.log").write_text(log_text[-200_000:])
    tail = log_text.splitlines()[-3:]
    record(
        args.results,
        "bf16 LLaMA-Factory training, 2 steps, right after the vLLM candidates",
        "ok" if code == 0 and losses else "FAILED",
        f"exit {code} in {seconds:.0f} s; losses {losses}; GPU at start {gib(gpu_memory())}"
        + ("" if code == 0 else f"; log tail: {tail}"),
    )


def step_note(args) -> None:
    record(args.results, args.step_name, args.status, args.detail)


def step_table(args) -> None:
    rows = (
        [json.loads(line) for line in args.results.read_text(encoding="utf-8").splitlines()]
        if args.results.exists()
        else []
    )
    print("| step | status | detail |\n|---|---|---|")
    for row in rows:
        print(f"| {row['step']} | {row['status']} | {row['detail'].replace('|', '/')} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["machine", "model", "throughput", "release", "note", "table"])
    parser.add_argument(
        "--results", type=Path, default=Path(os.environ.get("OUT", "state/gpu_check")) / "gpu_check_results.jsonl"
    )
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-repeats", type=int, default=3, help="throughput: repeats of the first backend")
    parser.add_argument("--backends", default="transformers,vllm", help="throughput: the first is the baseline")
    parser.add_argument("--backend", default="vllm", help="release: the candidates' backend")
    parser.add_argument(
        "--max-held-gib", type=float, default=1.0, help="release: GPU memory a closed engine may leave held"
    )
    parser.add_argument(
        "--train-python", default=None, help="release: the training environment's Python (no training without)"
    )
    parser.add_argument("--train-pythonpath", default=None)
    parser.add_argument("--min-free-fraction", type=float, default=0.9)
    parser.add_argument("--step", dest="step_name", help="note: the row's step")
    parser.add_argument("--status", help="note: the row's status")
    parser.add_argument("--detail", help="note: the row's detail")
    args = parser.parse_args()
    steps = {
        "machine": step_machine,
        "model": step_model,
        "throughput": step_throughput,
        "release": step_release,
        "note": step_note,
        "table": step_table,
    }
    steps[args.step](args)


if __name__ == "__main__":
    main()
